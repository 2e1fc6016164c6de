"""Release-migrations' own lint rules, for what squawk does not check, on the plan's parsed statements.

Unbatched writes to existing tables (a WHERE that bounds nothing, data-modifying CTEs, MERGE), ``UPDATE …
LIMIT`` and ``COMMIT`` inside a ``DO`` block run in a transaction, statements PostgreSQL refuses inside a
transaction (also when one ``op.execute()`` sends them with others), a revision that overrides the apply
path's timeouts, table rewrites, explicit locks, and a revision without a real ``downgrade()``.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.module_utils.lint_rules import rule
from ansible.module_utils.lint_walk import Statement, Walk, nodes, parse

_LIMIT = re.compile(r"\b(UPDATE|DELETE)\b[^;]*\bLIMIT\s+\S+", re.I | re.S)
_DOLLAR = "$rm_lint$"
_WRAPPER = "CREATE FUNCTION rm_lint_do() RETURNS void LANGUAGE plpgsql AS "
_COMMIT = re.compile(r"(^|;)\s*(COMMIT|ROLLBACK)\b", re.I)
_TIMEOUTS = {"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout", "transaction_timeout"}
_RANGE_OPS = {"<", "<=", ">", ">="}


def finding(stmt: Statement, name: str, detail: str = "") -> dict[str, Any]:
    return {"revision": stmt.revision, "line": stmt.line, "statement": " ".join(stmt.text.split())[:200],
            "rule": name, "detail": detail, **rule(name)}


# --- DO blocks --------------------------------------------------------------------------------------


def _do_args(node: Any) -> tuple[str, str]:
    body, language = "", "plpgsql"
    for arg in node.args or ():
        if arg.defname == "as":
            body = arg.arg.sval
        elif arg.defname == "language":
            language = arg.arg.sval.lower()
    return body, language


def _do_block(stmt: Statement) -> list[dict[str, Any]]:
    """UPDATE ... LIMIT, COMMIT in a transaction and unbatched writes inside a DO block's PL/pgSQL (a DO block
    in another language is not read)."""
    from pglast import parse_plpgsql
    from pglast.parser import ParseError

    body, language = _do_args(stmt.node)
    if language != "plpgsql":
        return []
    found: list[dict[str, Any]] = []
    try:
        tree = parse_plpgsql(f"{_WRAPPER}{_DOLLAR}\n{body}\n{_DOLLAR}")
    except ParseError as exc:
        name = "update-limit" if _LIMIT.search(body) else "syntax-error"
        found.append(finding(stmt, name, f"inside the DO block: {exc}"))
        commits, queries = bool(_COMMIT.search(body)), []
    else:
        commits, queries = _plpgsql_facts(tree)
    if commits and stmt.in_transaction:
        found.append(finding(stmt, "commit-in-do-block"))
    for query in queries:
        node, _ = parse(query)
        if node is not None and _unbounded_writes(node):
            found.append(finding(stmt, "unbatched-write", f"inside the DO block: {' '.join(query.split())[:120]}"))
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


# --- unbatched writes ---------------------------------------------------------------------------------


def _unbounded_writes(node: Any) -> list[Any]:
    """The UPDATE/DELETE/MERGE statements in ``node`` (itself, or in its data-modifying CTEs) that nothing
    bounds: no WHERE, or a WHERE that never narrows the rows to a key range, a list or one key."""
    from pglast import ast

    out = []
    for item in nodes(node):
        if isinstance(item, ast.UpdateStmt | ast.DeleteStmt):
            if item.whereClause is None or not _bounded(item.whereClause):
                out.append(item)
        elif isinstance(item, ast.MergeStmt) and not _bounded(item.joinCondition):
            out.append(item)
    return out


def _bounded(expr: Any) -> bool:
    """Whether a condition keeps the rows to a batch: ``col = value``, ``col IN (values or a subquery)``,
    ``BETWEEN``, or a range with both ends on one column; AND needs one bounded side, OR needs all."""
    from pglast import ast

    if isinstance(expr, ast.BoolExpr):
        kind = getattr(expr.boolop, "name", "")
        parts = [_bounded(a) for a in expr.args]
        if kind == "AND_EXPR":
            return any(parts) or _two_sided(expr.args)
        return kind == "OR_EXPR" and all(parts)
    if isinstance(expr, ast.SubLink):
        return getattr(expr.subLinkType, "name", "") == "ANY_SUBLINK"
    if not isinstance(expr, ast.A_Expr):
        return False
    kind = getattr(expr.kind, "name", "")
    column_and_value = isinstance(expr.lexpr, ast.ColumnRef) and _is_value(expr.rexpr)
    if kind in ("AEXPR_IN", "AEXPR_BETWEEN"):
        return isinstance(expr.lexpr, ast.ColumnRef)
    return kind == "AEXPR_OP" and _operator(expr) == "=" and column_and_value


def _operator(expr: Any) -> str:
    return "".join(getattr(part, "sval", "") for part in expr.name or ())


def _is_value(node: Any) -> bool:
    from pglast import ast

    if isinstance(node, ast.TypeCast):
        node = node.arg
    return isinstance(node, ast.A_Const | ast.ParamRef)


def _two_sided(args: Any) -> bool:
    """A lower and an upper bound on one column (``id > :lo AND id <= :hi``)."""
    from pglast import ast

    sides: dict[str, set[str]] = {}
    for arg in args:
        if isinstance(arg, ast.A_Expr) and _operator(arg) in _RANGE_OPS and isinstance(arg.lexpr, ast.ColumnRef) \
                and _is_value(arg.rexpr):
            column = ".".join(getattr(f, "sval", "*") for f in arg.lexpr.fields)
            sides.setdefault(column, set()).add("low" if _operator(arg).startswith(">") else "high")
    return any(found == {"low", "high"} for found in sides.values())


# --- transactions, timeouts, rewrites -----------------------------------------------------------------


def _option_names(node: Any, attribute: str) -> set[str]:
    return {str(getattr(o, "defname", "")).lower() for o in (getattr(node, attribute, None) or ())}


def needs_no_transaction(node: Any) -> bool:
    """Statements PostgreSQL refuses inside a transaction block."""
    from pglast import ast

    if isinstance(node, ast.VacuumStmt | ast.CreatedbStmt | ast.DropdbStmt | ast.AlterSystemStmt):
        return True
    if isinstance(node, ast.DropStmt | ast.IndexStmt) and getattr(node, "concurrent", False):
        return True
    if isinstance(node, ast.ReindexStmt) and "concurrently" in _option_names(node, "params"):
        return True
    if isinstance(node, ast.AlterTableStmt):
        return any(getattr(c.subtype, "name", "") == "AT_DetachPartition" and getattr(c.def_, "concurrent", False)
                   for c in node.cmds or ())
    return False


def _overrides_timeouts(node: Any) -> str | None:
    from pglast import ast

    if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() in _TIMEOUTS:
        return node.name
    for item in nodes(node) if isinstance(node, ast.SelectStmt) else ():
        if isinstance(item, ast.FuncCall) and item.funcname[-1].sval == "set_config" and item.args:
            first = item.args[0]
            value = getattr(getattr(first, "val", None), "sval", None) or getattr(first, "sval", None)
            if value and value.lower() in _TIMEOUTS:
                return value
    return None


def _statement_rules(stmt: Statement, version_table: str) -> list[dict[str, Any]]:
    if stmt.error is not None:
        name = "update-limit" if _LIMIT.search(stmt.text) else "syntax-error"
        return [finding(stmt, name, stmt.error)]
    node, kind, existing = stmt.node, type(stmt.node).__name__, not stmt.table_is_new
    found = []
    if kind == "DoStmt":
        found += _do_block(stmt)
    if existing and stmt.table != version_table and _unbounded_writes(node):
        found.append(finding(stmt, "unbatched-write"))
    squawk_says_so = kind == "IndexStmt" and stmt.in_transaction  # ban-concurrent-index-creation-in-transaction
    if needs_no_transaction(node) and (stmt.in_transaction or stmt.shared_execute) and not squawk_says_so:
        found.append(finding(stmt, "not-in-transaction", "sent in one op.execute() with other statements, which "
                             "PostgreSQL runs as one transaction" if stmt.shared_execute else ""))
    overridden = _overrides_timeouts(node)
    if overridden:
        found.append(finding(stmt, "timeout-override", f"sets {overridden}"))
    if existing and (kind == "ClusterStmt" or (kind == "VacuumStmt" and "full" in _option_names(node, "options"))):
        found.append(finding(stmt, "table-rewrite"))
    if kind == "LockStmt":
        found.append(finding(stmt, "lock-table"))
    return found


def our_findings(walk: Walk, revisions: list[dict[str, Any]], direction: str = "up") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for stmt in walk.statements:
        found += _statement_rules(stmt, walk.version_table)
    for entry in revisions:
        if "squawk-ignore" in (entry.get("sql") or "").lower():
            found.append({"revision": entry["revision"], "line": None, "statement": "-- squawk-ignore …",
                          "rule": "lint-ignore-comment", "detail": "", **rule("lint-ignore-comment")})
        if entry.get("sql") is None:
            found.append({"revision": entry["revision"], "line": None, "statement": "(not rendered)",
                          "rule": "sql-not-rendered", "detail": entry.get("pinned_to") or "",
                          **rule("sql-not-rendered")})
        if direction == "up" and entry.get("downgrade") in ("empty", "raises", "missing"):
            found.append({"revision": entry["revision"], "line": None, "statement": "def downgrade()",
                          "rule": "downgrade-missing", "detail": f"downgrade() {entry['downgrade']}",
                          **rule("downgrade-missing")})
    return found
