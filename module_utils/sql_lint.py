"""Find dangerous or invalid operations in a migration's offline SQL (the audit preview).

``error``: PostgreSQL will refuse the statement as written (the runbook's own mistakes among them).
``warn``: it runs, but may block traffic, rewrite a table or lose data; a person should look.
Tables created earlier in the same preview are new and empty, so lock and scan warnings skip them.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.module_utils.sql_text import split_with_lines

_RULES: list[tuple[str, str, re.Pattern[str], str]] = [
    ("update-limit", "error", re.compile(r"\bUPDATE\b[^;]*\bLIMIT\s+\d+", re.I | re.S),
     "UPDATE ... LIMIT is not valid PostgreSQL; batch by key ranges instead (WHERE id > :last ... ORDER BY id)."),
    ("commit-in-do-block", "error", re.compile(r"\bDO\s+\$\w*\$.*?\bCOMMIT\b.*?\$\w*\$", re.I | re.S),
     "COMMIT inside a DO block fails when the block runs in a transaction (as Alembic runs it); "
     "commit batches from Python inside op.get_context().autocommit_block()."),
    ("drop-table", "warn", re.compile(r"\bDROP\s+TABLE\b", re.I),
     "DROP TABLE deletes data; make sure the backup is verified and the app no longer reads the table."),
    ("drop-column", "warn", re.compile(r"\bALTER\s+TABLE\b[^;]*\bDROP\s+COLUMN\b", re.I | re.S),
     "DROP COLUMN deletes data and breaks app versions that still read the column; deploy the code first."),
    ("rename", "warn", re.compile(r"\bRENAME\s+(?:COLUMN\s+|TO\b)", re.I),
     "A rename breaks the running app version; add the new name, copy, switch the code, then drop the old one."),
    ("alter-type", "warn", re.compile(r"\bALTER\s+COLUMN\s+\S+\s+(?:SET\s+DATA\s+)?TYPE\b", re.I),
     "Changing a column's type can rewrite the table under an ACCESS EXCLUSIVE lock."),
    ("lock-table", "warn", re.compile(r"\bLOCK\s+TABLE\b", re.I),
     "An explicit LOCK TABLE blocks traffic for the rest of the transaction."),
    ("vacuum-full", "warn", re.compile(r"\bVACUUM\s+FULL\b|\bCLUSTER\b", re.I),
     "VACUUM FULL / CLUSTER rewrite the table under an ACCESS EXCLUSIVE lock."),
]

_CREATE_TABLE = re.compile(r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.\"]+)", re.I)
_CREATE_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?[\w\"]*\s*ON\s+(?:ONLY\s+)?([\w.\"]+)",
    re.I,
)
_DROP_INDEX_CONC = re.compile(r"\b(?:DROP|REINDEX)\s+INDEX\s+CONCURRENTLY\b|\bREINDEX\b[^;]*\bCONCURRENTLY\b", re.I)
_ALTER_TABLE = re.compile(r"\bALTER\s+TABLE\s+(?:ONLY\s+)?(?:IF\s+EXISTS\s+)?([\w.\"]+)", re.I)
_SET_NOT_NULL = re.compile(r"\bALTER\s+COLUMN\s+([\w\"]+)\s+SET\s+NOT\s+NULL", re.I)
_ADD_NOT_NULL_NO_DEFAULT = re.compile(r"\bADD\s+(?:COLUMN\s+)?(?!CONSTRAINT)[\w\"]+\s+[^,;]*\bNOT\s+NULL\b", re.I)
_FOREIGN_KEY = re.compile(r"\bADD\s+CONSTRAINT\s+\S+\s+FOREIGN\s+KEY\b", re.I)
_CHECK_NOT_NULL = re.compile(r"CHECK\s*\(\s*\(?\s*([\w\"]+)\s+IS\s+NOT\s+NULL", re.I)
_WHOLE_TABLE_WRITE = re.compile(r"^\s*(UPDATE|DELETE\s+FROM)\s+([\w.\"]+)(?:(?!\bWHERE\b)[^;])*$", re.I | re.S)


def _name(raw: str) -> str:
    return raw.replace('"', "").split(".")[-1].lower()


def _statements(sql: str) -> list[tuple[int, str]]:
    """(line number, statement) pairs at top-level semicolons (sql_text knows quotes and $tag$ bodies);
    comment lines before a statement are dropped."""
    out: list[tuple[int, str]] = []
    for line, statement in split_with_lines(sql):
        lines = statement.splitlines()
        while lines and (not lines[0].strip() or lines[0].strip().startswith("--")):
            lines.pop(0)
            line += 1
        if lines:
            out.append((line, "\n".join(lines).strip()))
    return out


class _Lint:
    """What the lint has learnt from the statements so far, and what it found."""

    def __init__(self) -> None:
        self.findings: list[dict[str, Any]] = []
        self.new_tables: set[str] = set()
        self.proven_not_null: set[str] = set()
        self.in_transaction = False

    def add(self, line: int, rule: str, severity: str, message: str, statement: str) -> None:
        self.findings.append({"line": line, "rule": rule, "severity": severity, "message": message,
                              "statement": " ".join(statement.split())[:160]})

    def statement(self, line: int, stmt: str) -> None:
        head = stmt.rstrip(";").strip().upper()
        if head in ("BEGIN", "START TRANSACTION"):
            self.in_transaction = True
            return
        if head in ("COMMIT", "ROLLBACK", "END"):
            self.in_transaction = False
            return
        for match in _CREATE_TABLE.finditer(stmt):
            self.new_tables.add(_name(match.group(1)))
        for rule, severity, pattern, message in _RULES:
            if pattern.search(stmt):
                self.add(line, rule, severity, message, stmt)
        self.indexes(line, stmt)
        self.alter_table(line, stmt)
        whole = _WHOLE_TABLE_WRITE.match(stmt.rstrip(";"))
        if whole and _name(whole.group(2)) not in self.new_tables and "alembic_version" not in stmt.lower():
            self.add(line, "whole-table-write", "warn",
                     f"{whole.group(1).split()[0].upper()} without WHERE touches every row of {_name(whole.group(2))} "
                     "in one transaction; batch it.", stmt)

    def indexes(self, line: int, stmt: str) -> None:
        index = _CREATE_INDEX.search(stmt)
        if index:
            concurrently, table = index.group(1), _name(index.group(2))
            if concurrently and self.in_transaction:
                self.add(line, "concurrently-in-transaction", "error",
                         "CREATE INDEX CONCURRENTLY cannot run inside a transaction block; wrap it in "
                         "`with op.get_context().autocommit_block():`.", stmt)
            elif not concurrently and table not in self.new_tables:
                self.add(line, "index-not-concurrent", "warn",
                         f"CREATE INDEX on existing table {table} blocks its writes for the whole build; "
                         "use CREATE INDEX CONCURRENTLY in an autocommit_block().", stmt)
        if _DROP_INDEX_CONC.search(stmt) and self.in_transaction:
            self.add(line, "concurrently-in-transaction", "error",
                     "DROP/REINDEX ... CONCURRENTLY cannot run inside a transaction block; use autocommit_block().",
                     stmt)

    def alter_table(self, line: int, stmt: str) -> None:
        altered = _ALTER_TABLE.search(stmt)
        if not altered:
            return
        table = _name(altered.group(1))
        for col in _CHECK_NOT_NULL.findall(stmt):
            self.proven_not_null.add(f"{table}.{_name(col)}")
        if table in self.new_tables:
            return
        for col in _SET_NOT_NULL.findall(stmt):
            if f"{table}.{_name(col)}" not in self.proven_not_null:
                self.add(line, "set-not-null-scan", "warn",
                         f"SET NOT NULL on {table}.{_name(col)} scans the whole table under an ACCESS EXCLUSIVE "
                         "lock; add a CHECK (... IS NOT NULL) NOT VALID constraint and VALIDATE it first.", stmt)
        add_col = _ADD_NOT_NULL_NO_DEFAULT.search(stmt)
        if add_col and "DEFAULT" not in add_col.group(0).upper():
            self.add(line, "add-not-null-without-default", "warn",
                     f"Adding a NOT NULL column without a default fails if {table} has rows; add it nullable, "
                     "backfill, then set NOT NULL (or give a server default).", stmt)
        if _FOREIGN_KEY.search(stmt) and "NOT VALID" not in stmt.upper():
            self.add(line, "foreign-key-validation", "warn",
                     f"Adding a foreign key to existing table {table} scans it while blocking writes; add it "
                     "NOT VALID, then VALIDATE CONSTRAINT in a later step.", stmt)


def lint_sql(sql: str) -> list[dict[str, Any]]:
    """The findings on a migration's offline SQL, in statement order."""
    lint = _Lint()
    for line, stmt in _statements(sql):
        lint.statement(line, stmt)
    return lint.findings
