"""A plan's statements on PostgreSQL's own parser (pglast), in the order they run, and our own rules.

While walking the plan in order we know what Alembic knows: whether a statement runs inside a transaction
(Alembic's BEGIN/COMMIT, and the COMMIT/BEGIN around an ``autocommit_block()``) and which tables earlier
statements of the plan created (new and empty: lock and scan findings on them are dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.lint_rules import rule
from ansible.module_utils.sql_text import split_with_lines

_LIMIT = re.compile(r"\b(UPDATE|DELETE)\b[^;]*\bLIMIT\s+\S+", re.I | re.S)
_DOLLAR = "$rm_lint$"
_WRAPPER = "CREATE FUNCTION rm_lint_do() RETURNS void LANGUAGE plpgsql AS "
_COMMIT = re.compile(r"(^|;)\s*(COMMIT|ROLLBACK)\b", re.I)


@dataclass
class Statement:
    revision: str
    line: int  # first line, 1-based, in the revision's SQL
    last_line: int
    text: str
    node: Any  # pglast node, or None when it does not parse
    error: str | None
    in_transaction: bool
    table: str | None  # the table it acts on, lower case, schema-less
    table_is_new: bool  # created earlier in the plan


@dataclass
class Walk:
    """The plan's statements in the order they run, with what is known at each."""

    version_table: str = "alembic_version"
    statements: list[Statement] = field(default_factory=list)
    starts_in_transaction: dict[str, bool] = field(default_factory=dict)
    new_tables: set[str] = field(default_factory=set)
    in_transaction: bool = False


def _table_of(node: Any) -> str | None:
    relation = getattr(node, "relation", None)
    if relation is None and type(node).__name__ == "CreateTableAsStmt":
        relation = getattr(getattr(node, "into", None), "rel", None)
    name = getattr(relation, "relname", None)
    return name.lower() if name else None


def _parse(text: str) -> tuple[Any, str | None]:
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        parsed = parse_sql(text)
    except ParseError as exc:
        return None, str(exc)
    return (parsed[0].stmt if parsed else None), None


def _transaction_change(node: Any, now: bool) -> bool:
    if type(node).__name__ != "TransactionStmt":
        return now
    kind = getattr(node.kind, "name", str(node.kind))
    if kind.endswith(("BEGIN", "START")):
        return True
    if kind.endswith(("COMMIT", "ROLLBACK", "COMMIT_PREPARED", "ROLLBACK_PREPARED")):
        return False
    return now


def _statements(sql: str) -> list[tuple[int, str]]:
    """(line of its first word, statement) at top-level semicolons, without the comment lines before each
    (Alembic's ``-- Running upgrade`` among them)."""
    out = []
    for line, text in split_with_lines(sql):
        lines = text.splitlines()
        while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
            lines.pop(0)
        if lines:
            out.append((line, "\n".join(lines).strip()))
    return out


def walk_plan(revisions: list[dict[str, Any]], version_table: str = "alembic_version") -> Walk:
    """Every statement of the plan, parsed, with its transaction state and whether its table is new."""
    walk = Walk(version_table=version_table.rpartition(".")[2].lower())
    for entry in revisions:
        walk.starts_in_transaction[entry["revision"]] = walk.in_transaction
        for line, text in _statements(entry.get("sql") or ""):
            node, error = _parse(text)
            table = _table_of(node)
            walk.statements.append(Statement(
                entry["revision"], line, line + text.count("\n"), text, node, error, walk.in_transaction,
                table, table in walk.new_tables))
            walk.in_transaction = _transaction_change(node, walk.in_transaction)
            if type(node).__name__ in ("CreateStmt", "CreateTableAsStmt") and table:
                walk.new_tables.add(table)
    return walk


# --- our rules --------------------------------------------------------------------------------------


def _finding(stmt: Statement, name: str, detail: str = "") -> dict[str, Any]:
    return {"revision": stmt.revision, "line": stmt.line, "statement": " ".join(stmt.text.split())[:200],
            "rule": name, "detail": detail, **rule(name)}


def _do_body(node: Any) -> str | None:
    for arg in node.args or ():
        if arg.defname == "as":
            return arg.arg.sval
    return None


def _do_block(stmt: Statement) -> list[dict[str, Any]]:
    """UPDATE ... LIMIT, COMMIT in a transaction and unbatched writes inside a DO block's PL/pgSQL."""
    from pglast import parse_plpgsql
    from pglast.parser import ParseError

    body = _do_body(stmt.node) or ""
    found: list[dict[str, Any]] = []
    try:
        tree = parse_plpgsql(f"{_WRAPPER}{_DOLLAR}\n{body}\n{_DOLLAR}")
    except ParseError as exc:
        if _LIMIT.search(body):
            found.append(_finding(stmt, "update-limit", "inside the DO block"))
        else:
            found.append(_finding(stmt, "syntax-error", f"inside the DO block: {exc}"))
        commits = bool(_COMMIT.search(body))
        queries: list[str] = []
    else:
        commits, queries = _plpgsql_facts(tree)
    if commits and stmt.in_transaction:
        found.append(_finding(stmt, "commit-in-do-block"))
    for query in queries:
        node, _ = _parse(query)
        if _whole_table_write(node):
            found.append(_finding(stmt, "unbatched-write", f"inside the DO block: {' '.join(query.split())[:120]}"))
    return found


def _plpgsql_facts(tree: Any) -> tuple[bool, list[str]]:
    """(does it COMMIT or ROLLBACK, the SQL statements it runs) from pglast's PL/pgSQL tree."""
    commits, queries = False, []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("PLpgSQL_stmt_commit", "PLpgSQL_stmt_rollback"):
                    commits = True
                if key == "PLpgSQL_stmt_execsql":
                    query = value.get("sqlstmt", {}).get("PLpgSQL_expr", {}).get("query")
                    if query:
                        queries.append(query)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return commits, queries


def _whole_table_write(node: Any) -> bool:
    """An UPDATE/DELETE whose WHERE cannot bound it: none at all, or only NULL/boolean tests (the backfill
    ``WHERE new_column IS NULL`` matches every row). A comparison with a value, IN or BETWEEN bounds it."""
    if type(node).__name__ not in ("UpdateStmt", "DeleteStmt"):
        return False
    where = getattr(node, "whereClause", None)
    return where is None or not _bounded(where)


def _bounded(expr: Any) -> bool:
    from pglast import ast

    for node in _nodes(expr):
        if isinstance(node, ast.SubLink):
            return True
        if isinstance(node, ast.A_Expr) and not (isinstance(node.lexpr, ast.ColumnRef)
                                                 and isinstance(node.rexpr, ast.ColumnRef)):
            return True
    return False


def _nodes(expr: Any):
    from pglast import ast

    stack = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(item)
        elif isinstance(item, ast.Node):
            yield item
            stack.extend(getattr(item, name) for name in item if getattr(item, name, None) is not None)


def _option_names(node: Any, attribute: str) -> set[str]:
    return {str(getattr(o, "defname", "")).lower() for o in (getattr(node, attribute, None) or ())}


def _not_in_transaction(node: Any) -> bool:
    kind = type(node).__name__
    if kind in ("VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt"):
        return True
    if kind == "DropStmt" and getattr(node, "concurrent", False):
        return True
    return kind == "ReindexStmt" and "concurrently" in _option_names(node, "params")


def _statement_rules(stmt: Statement, version_table: str) -> list[dict[str, Any]]:
    if stmt.error is not None:
        name = "update-limit" if _LIMIT.search(stmt.text) else "syntax-error"
        return [_finding(stmt, name, stmt.error)]
    node, kind, existing = stmt.node, type(stmt.node).__name__, not stmt.table_is_new
    found = []
    if kind == "DoStmt":
        found += _do_block(stmt)
    if _whole_table_write(node) and existing and stmt.table != version_table:
        found.append(_finding(stmt, "unbatched-write"))
    if stmt.in_transaction and _not_in_transaction(node):
        found.append(_finding(stmt, "not-in-transaction"))
    if existing and (kind == "ClusterStmt" or (kind == "VacuumStmt" and "full" in _option_names(node, "options"))):
        found.append(_finding(stmt, "table-rewrite"))
    if kind == "LockStmt":
        found.append(_finding(stmt, "lock-table"))
    return found


def our_findings(walk: Walk, revisions: list[dict[str, Any]], direction: str = "up") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for stmt in walk.statements:
        found += _statement_rules(stmt, walk.version_table)
    if direction == "up":
        for entry in revisions:
            if entry.get("downgrade") in ("empty", "raises", "missing"):
                found.append({"revision": entry["revision"], "line": None, "statement": "def downgrade()",
                              "rule": "downgrade-missing", "detail": f"downgrade() {entry['downgrade']}",
                              **rule("downgrade-missing")})
    return found
