"""The running app's queries, and whether each still prepares on a schema (expand/contract checked before apply).

Queries come from the live database's ``pg_stat_statements`` (the top N by calls: normalized, with ``$n``
parameters) and/or files the app ships (``.sql``, statements separated by semicolons). Only plain DML
(``SELECT``/``INSERT``/``UPDATE``/``DELETE``, ``WITH``) is kept: it is what an app version runs, and
``PREPARE`` parses, names and type-checks it without running it. A query that prepares before the plan and
not after a revision means the app version still running breaks the moment that revision commits.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.module_utils.sql_text import mask_sql_secrets, split_statements

DML = ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt")
TOP_N = 200
# "could not determine data type of parameter $n": declared text and prepared again (at most this many).
_UNTYPED = re.compile(r"could not determine data type of parameter \$(\d+)")
MAX_PARAMETERS = 100


_DML_WORDS = ("select", "insert", "update", "delete", "with", "values", "table")


def dml_only(text: str) -> str | None:
    """The statement if it is one plain DML statement PostgreSQL's parser accepts, else None. Where pglast is not
    installed (an app image), by its first word: PREPARE itself refuses anything else."""
    try:
        from pglast import parse_sql
        from pglast.parser import ParseError
    except ImportError:
        statements = split_statements(text)
        first = statements[0].split(None, 1)[0].lower() if len(statements) == 1 and statements[0].split() else ""
        return statements[0] if first in _DML_WORDS else None
    try:
        parsed = parse_sql(text)
    except ParseError:
        return None
    if len(parsed) != 1 or type(parsed[0].stmt).__name__ not in DML:
        return None
    return text.strip().rstrip(";").strip()


def from_stat_statements(cur, limit: int = TOP_N) -> tuple[list[dict[str, Any]], str | None]:
    """The current database's most called DML from pg_stat_statements, or ([], why not)."""
    cur.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_stat_statements'")
    row = cur.fetchone()
    if row is None:
        return [], "pg_stat_statements is not installed in this database"
    schema = row[0]
    try:
        cur.execute("SAVEPOINT rm_stat_statements")
        cur.execute(f'SELECT query, calls FROM "{schema}".pg_stat_statements '  # noqa: S608 - the extension's schema
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "ORDER BY calls DESC LIMIT %s", (limit * 4,))
        rows = cur.fetchall()
    except Exception as exc:  # noqa: BLE001 - e.g. not in shared_preload_libraries
        cur.execute("ROLLBACK TO SAVEPOINT rm_stat_statements")
        return [], f"pg_stat_statements cannot be read: {str(exc).strip().splitlines()[0]}"
    out: list[dict[str, Any]] = []
    for text, calls in rows:
        query = dml_only(text or "")
        if query and query not in {q["query"] for q in out}:
            out.append({"query": query, "source": "pg_stat_statements", "calls": int(calls)})
        if len(out) >= limit:
            break
    return out, None


def from_files(paths: list[str]) -> list[dict[str, Any]]:
    """The DML statements in the app's query files; anything else in them is named as skipped."""
    from ansible.module_utils.operator_error import OperatorError

    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = (exc.strerror if isinstance(exc, OSError)
                   else f"it is not UTF-8 text ({exc.reason} at byte {exc.start})")
            raise OperatorError(f"The app's query file {path} cannot be read: {why}.",
                                "Point rm_app_queries at the app's query file (SQL, ';'-separated, UTF-8).") from None
        for statement in split_statements(text):
            lines = statement.splitlines()
            while lines and lines[0].lstrip().startswith("--"):
                lines.pop(0)
            statement = "\n".join(lines).strip()
            if not statement:
                continue
            query = dml_only(statement)
            out.append({"query": query or statement, "source": path, "skipped": None if query else
                        "not one plain SELECT/INSERT/UPDATE/DELETE PostgreSQL can parse"})
    return out


def prepare_all(cur, queries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{query: {ok, sqlstate, error}} from PREPARE on this session (nothing is executed; all deallocated)."""
    results: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(queries):
        if entry.get("skipped"):
            continue
        failure = _prepare(cur, f"rm_app_query_{index}", entry["query"])
        results[entry["query"]] = ({"ok": True, "sqlstate": None, "error": None} if failure is None
                                   else {"ok": False, **failure})
    return results


def _prepare(cur, name: str, query: str) -> dict[str, Any] | None:
    """None when the query prepares, else {sqlstate, error}. A parameter whose type PostgreSQL cannot infer
    (``$1 IS NULL``, ``concat($1, col)``: common once pg_stat_statements has replaced literals) is declared
    ``text`` and the PREPARE tried again, so such queries are checked against the schema too."""
    typed: set[int] = set()
    while True:
        types = ["text" if n in typed else "unknown" for n in range(1, max(typed, default=0) + 1)]
        declared = f"({', '.join(types)})" if types else ""
        cur.execute("SAVEPOINT rm_prepare")
        try:
            cur.execute(f"PREPARE {name}{declared} AS {query}")
            cur.execute(f"DEALLOCATE {name}")
            cur.execute("RELEASE SAVEPOINT rm_prepare")
            return None
        except Exception as exc:  # noqa: BLE001 - the error is the finding
            cur.execute("ROLLBACK TO SAVEPOINT rm_prepare")
            cur.execute("RELEASE SAVEPOINT rm_prepare")
            diag = getattr(getattr(exc, "diag", None), "message_primary", None)
            message = diag or (getattr(exc, "pgerror", None) or str(exc)).strip().splitlines()[0]
            untyped = _UNTYPED.search(message) if getattr(exc, "pgcode", None) == "42P18" else None
            if untyped is None or int(untyped[1]) in typed or len(typed) >= MAX_PARAMETERS:
                return {"sqlstate": getattr(exc, "pgcode", None), "error": message}
            typed.add(int(untyped[1]))


def shown(query: str) -> str:
    """A query as a report shows it: one line, literals masked."""
    return mask_sql_secrets(" ".join(query.split())) or ""
