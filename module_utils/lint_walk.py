"""A plan's statements on PostgreSQL's own parser (pglast), in the order they run, with what Alembic knows.

While walking the plan in order we know: whether a statement runs inside a transaction (Alembic's BEGIN/COMMIT,
and the COMMIT/BEGIN around an ``autocommit_block()``); which statements one ``op.execute()`` sent together
(Alembic ends each with ``;`` and a blank line; PostgreSQL runs a multi-statement string as one transaction);
which tables earlier statements of the plan created (new and empty: lock and scan findings on them are
dropped), by schema and exact name, forgotten again when dropped or renamed; and which columns a validated
``CHECK (col IS NOT NULL)`` already proves (a later ``SET NOT NULL`` then scans nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.sql_text import split_with_spans


@dataclass
class Statement:
    revision: str
    line: int  # first line, 1-based, in the revision's SQL
    last_line: int
    text: str
    node: Any  # pglast node, or None when it does not parse
    error: str | None
    in_transaction: bool
    table: str | None  # the table it acts on, as PostgreSQL names it (unquoted names folded to lower case)
    table_is_new: bool  # created earlier in the plan
    schema: str | None = None
    execute: int = 0  # statements with the same number were sent by one op.execute()
    shared_execute: bool = False  # ... together with other statements
    proven_not_null: bool = False  # a SET NOT NULL whose columns a validated CHECK already proves


@dataclass
class Walk:
    """The plan's statements in the order they run, with what is known at each."""

    version_table: str = "alembic_version"
    statements: list[Statement] = field(default_factory=list)
    starts_in_transaction: dict[str, bool] = field(default_factory=dict)
    new_tables: set[tuple[str, str]] = field(default_factory=set)
    in_transaction: bool = False
    not_null_checks: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # name: (table, col, valid)
    proven: set[tuple[str, str]] = field(default_factory=set)  # (table, column)


def relation_of(node: Any) -> Any:
    relation = getattr(node, "relation", None)
    if relation is None and type(node).__name__ == "CreateTableAsStmt":
        relation = getattr(getattr(node, "into", None), "rel", None)
    if relation is None and type(node).__name__ == "TruncateStmt" and node.relations:
        relation = node.relations[0]
    return relation


def parse(text: str) -> tuple[Any, str | None]:
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


def _statements(sql: str) -> list[tuple[int, str, int]]:
    """(line of its first word, statement, execute number) at top-level semicolons, without the comment lines
    before each (Alembic's ``-- Running upgrade`` among them). A statement whose semicolon is not followed by
    a blank line was sent in one string with the next."""
    out, execute = [], 0
    for line, text, end in split_with_spans(sql):
        lines = text.splitlines()
        while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
            lines.pop(0)
        if lines:
            out.append((line, "\n".join(lines).strip(), execute))
        if sql[end:end + 2] == "\n\n" or end >= len(sql.rstrip()):
            execute += 1
    return out


def _key(relation: Any) -> tuple[str, str]:
    return (relation.schemaname or "public", relation.relname)


def _track_tables(walk: Walk, node: Any) -> None:
    """Tables created by the plan are new; dropped or renamed ones are forgotten (the new name is not new)."""
    kind = type(node).__name__
    if kind == "CreateStmt" and not node.if_not_exists or kind == "CreateTableAsStmt":
        walk.new_tables.add(_key(relation_of(node)))
    elif kind == "DropStmt" and getattr(node.removeType, "name", "") == "OBJECT_TABLE":
        for name in node.objects or ():
            parts = [getattr(p, "sval", "") for p in name]
            walk.new_tables.discard((parts[-2] if len(parts) > 1 else "public", parts[-1]))
    elif kind == "RenameStmt" and getattr(node.renameType, "name", "") == "OBJECT_TABLE" and node.relation:
        old = _key(node.relation)
        renamed = (old[0], node.newname)
        if old in walk.new_tables:
            walk.new_tables.add(renamed)
        else:
            walk.new_tables.discard(renamed)
        walk.new_tables.discard(old)


def _track_not_null(walk: Walk, node: Any) -> bool:
    """Record CHECK (col IS NOT NULL) constraints and their validation; True for a SET NOT NULL they prove."""
    from pglast import ast

    if not isinstance(node, ast.AlterTableStmt) or node.relation is None:
        return False
    table, proven = node.relation.relname, True
    sets = False
    for cmd in node.cmds or ():
        subtype = getattr(cmd.subtype, "name", "")
        checked = _not_null_check(cmd.def_) if subtype == "AT_AddConstraint" else None
        if checked:
            name, column, valid = checked
            walk.not_null_checks[name] = (table, column, valid)
            if valid:
                walk.proven.add((table, column))
        elif subtype == "AT_ValidateConstraint" and cmd.name in walk.not_null_checks:
            walk.proven.add(walk.not_null_checks[cmd.name][:2])
        elif subtype == "AT_SetNotNull":
            sets = True
            proven = proven and (table, cmd.name) in walk.proven
    return sets and proven


def _not_null_check(constraint: Any) -> tuple[str, str, bool] | None:
    from pglast import ast

    if not isinstance(constraint, ast.Constraint) or getattr(constraint.contype, "name", "") != "CONSTR_CHECK":
        return None
    expr = constraint.raw_expr
    if not isinstance(expr, ast.NullTest) or getattr(expr.nulltesttype, "name", "") != "IS_NOT_NULL":
        return None
    column = getattr(expr.arg, "fields", None)
    if not column or not constraint.conname:
        return None
    return constraint.conname, column[-1].sval, not constraint.skip_validation


def walk_plan(revisions: list[dict[str, Any]], version_table: str = "alembic_version") -> Walk:
    """Every statement of the plan, parsed, with what was known when it ran (see the module docstring)."""
    walk = Walk(version_table=version_table.rpartition(".")[2].lower())
    executes = 0
    for entry in revisions:
        walk.starts_in_transaction[entry["revision"]] = walk.in_transaction
        statements = _statements(entry.get("sql") or "")
        counts = {e: sum(1 for s in statements if s[2] == e) for _, _, e in statements}
        for line, text, execute in statements:
            node, error = parse(text)
            relation = relation_of(node)
            key = _key(relation) if relation is not None and relation.relname else None
            walk.statements.append(Statement(
                entry["revision"], line, line + text.count("\n"), text, node, error, walk.in_transaction,
                key[1] if key else None, key in walk.new_tables, key[0] if key else None,
                executes + execute, counts[execute] > 1, _track_not_null(walk, node)))
            walk.in_transaction = _transaction_change(node, walk.in_transaction)
            _track_tables(walk, node)
        executes += len(counts) + 1
    return walk


def nodes(expr: Any):
    """Every pglast node under ``expr`` (itself included), depth first."""
    from pglast import ast

    stack = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(item)
        elif isinstance(item, ast.Node):
            yield item
            stack.extend(getattr(item, name) for name in item if getattr(item, name, None) is not None)
