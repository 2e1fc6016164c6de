"""Read-only facts about a PostgreSQL database: Alembic revision, exact row counts, a schema
snapshot and the difference between two snapshots, smoke queries, and the runbook's monitoring
queries (top statements, table sizes, index usage, connections, lock waits).

Nothing here writes. The facts are read in one ``REPEATABLE READ READ ONLY`` transaction (so the
row counts are one consistent snapshot), and every smoke query runs alone in a ``READ ONLY``
transaction that is rolled back; a smoke query must be one statement, so it cannot ``COMMIT`` its
way out of that transaction.

The schema snapshot is plain JSON (dicts, lists, strings, booleans, integers, null) with sorted,
stable contents, so it survives an Ansible ``register`` and can be handed back later as
``expected_schema``. :func:`diff_schemas` is pure and works on two such snapshots.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_catalog import (
    NOT_FROM_EXTENSION,
    USER_SCHEMA,
    count_rows,
    qualified,
    read_revisions,
    user_tables,
    version_table_oid,
)
from ansible.module_utils.pg_connection import ConnInfo, server_version

SNAPSHOT_FORMAT = 1
SMOKE_TIMEOUT_S = 30
# Counting rows waits for AccessShareLock; behind a migration's ACCESS EXCLUSIVE lock we give up
# after this long rather than hang the play (the message says who to look for).
LOCK_TIMEOUT_S = 30
# Monitoring is best effort: a section that cannot take its lock quickly is reported as null.
MONITORING_LOCK_TIMEOUT_S = 5
QUERY_TEXT_LIMIT = 500
TOP_STATEMENTS = 10
TOP_TABLES = 20

_CONSTRAINT_TYPES = {
    "p": "PRIMARY KEY", "f": "FOREIGN KEY", "u": "UNIQUE", "c": "CHECK", "x": "EXCLUDE", "t": "TRIGGER",
}
_IDENTITY = {"a": "always", "d": "by default"}
_GENERATED = {"s": "stored", "v": "virtual"}
# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------

def json_value(value: Any) -> Any:
    """A smoke query's result as JSON: numbers, booleans and null as they are, anything else as text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


# Every literal a query text can carry a secret in: $tag$...$tag$, E'...' (backslash escapes), U&'...', '...'.
_LITERAL = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|)\$.*?\$\1\$|[Ee]'(?:[^'\\]|\\.|'')*'?|(?:[Uu]&)?'(?:[^']|'')*'?",
                      re.S)


def mask_sql_secrets(text: str | None) -> str | None:
    """Query text from pg_stat_activity / pg_stat_statements with every literal masked: a password (or any
    secret) written as a string in someone's statement never reaches a report."""
    if text is None:
        return None
    return _LITERAL.sub("'********'", text)[:QUERY_TEXT_LIMIT]


def split_statements(query: str) -> list[str]:
    """Split SQL text into its statements at top-level semicolons.

    Knows quoted strings ('..', E'..'), quoted identifiers, dollar quotes and comments, so a
    semicolon inside them does not split. Statements that are only blanks or comments are dropped.
    Used to refuse multi-statement smoke queries: ``COMMIT; DELETE ...`` would otherwise leave the
    read-only transaction.
    """
    out: list[str] = []
    start, i, n = 0, 0, len(query)
    significant = False
    while i < n:
        ch = query[i]
        nxt = query[i + 1] if i + 1 < n else ""
        if ch == "-" and nxt == "-":
            end = query.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if ch == "/" and nxt == "*":
            depth, i = 1, i + 2
            while i < n and depth:
                if query.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif query.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if ch == ";":
            if significant:
                out.append(query[start:i].strip())
            start, i, significant = i + 1, i + 1, False
            continue
        if ch.isspace():
            i += 1
            continue
        significant = True
        if ch == "'":
            escapes = i > 0 and query[i - 1] in "eE" and (i < 2 or not (query[i - 2].isalnum() or query[i - 2] == "_"))
            i += 1
            while i < n:
                if escapes and query[i] == "\\":
                    i += 2
                    continue
                if query[i] == "'":
                    if query.startswith("''", i):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            continue
        if ch == '"':
            end = query.find('"', i + 1)
            while end >= 0 and query.startswith('""', end):
                end = query.find('"', end + 2)
            i = n if end < 0 else end + 1
            continue
        if ch == "$" and not (i > 0 and (query[i - 1].isalnum() or query[i - 1] in "_$")):
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", query[i:])
            if match:
                tag = match.group(0)
                end = query.find(tag, i + len(tag))
                i = n if end < 0 else end + len(tag)
                continue
        i += 1
    if significant:
        out.append(query[start:].strip())
    return out


# --------------------------------------------------------------------------------------------
# Schema diff (pure)
# --------------------------------------------------------------------------------------------

def _null(nullable: Any) -> str:
    return "NULL" if nullable else "NOT NULL"


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def _column_text(col: dict) -> str:
    text = f"{col.get('type')} {_null(col.get('nullable'))}"
    if col.get("default") is not None:
        text += f" DEFAULT {col['default']}"
    return text


def _schema_prefix(table: str) -> str:
    return table.rsplit(".", 1)[0] + "." if "." in table else ""


def _each(live: dict, expected: dict, kind: str, out: list[str], detail: Callable[[Any], str] | None = None,
          both: Callable[[str, Any, Any], None] | None = None) -> None:
    """Report names only in one side; hand names on both sides to ``both``."""
    for name in sorted(set(live) | set(expected)):
        if name not in live:
            out.append(f"{kind} {name} missing" + (f" ({detail(expected[name])})" if detail else ""))
        elif name not in expected:
            out.append(f"{kind} {name} only in live" + (f" ({detail(live[name])})" if detail else ""))
        elif both is not None:
            both(name, live[name], expected[name])


def _diff_attributes(label: str, live: dict, expected: dict, fields: Iterable[str], out: list[str],
                     show: Callable[[str, Any], str] | None = None) -> None:
    for field in fields:
        a, b = live.get(field), expected.get(field)
        if a != b:
            shown = show or (lambda _f, v: _shown(v))
            out.append(f"{label}: {field} differs (live {shown(field, a)}, expected {shown(field, b)})")


def _show_column_field(field: str, value: Any) -> str:
    return _null(value) if field == "nullable" else _shown(value)


def _diff_table(table: str, live: dict, expected: dict, out: list[str]) -> None:
    def column(name: str, a: dict, b: dict) -> None:
        _diff_attributes(f"column {name}", a, b, ("type", "nullable", "default", "identity", "generated"),
                         out, _show_column_field)

    _each(_keyed(f"{table}.", live.get("columns")), _keyed(f"{table}.", expected.get("columns")), "column", out,
          _column_text, column)

    def index(name: str, a: str, b: str) -> None:
        if a != b:
            out.append(f"index {name} differs (live {a}; expected {b})")

    # Index names are unique per schema: name them with the schema, not the table.
    prefix = _schema_prefix(table)
    _each(_keyed(prefix, live.get("indexes")), _keyed(prefix, expected.get("indexes")), "index", out, str, index)

    def constraint(name: str, a: dict, b: dict) -> None:
        if a.get("definition") != b.get("definition"):
            out.append(f"constraint {name} differs (live {a.get('definition')}; expected {b.get('definition')})")
        elif a.get("type") != b.get("type"):
            out.append(f"constraint {name}: type differs (live {a.get('type')}, expected {b.get('type')})")

    _each(_keyed(f"{table}.", live.get("constraints")), _keyed(f"{table}.", expected.get("constraints")),
          "constraint", out, lambda c: str(c.get("definition")), constraint)


def _keyed(prefix: str, items: dict | None) -> dict:
    return {prefix + name: value for name, value in (items or {}).items()}


def check_snapshot(snapshot: Any, what: str = "expected_schema") -> dict:
    """The snapshot if it looks like one of ours, else an OperatorError naming what is wrong."""
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("tables"), dict):
        raise OperatorError(
            f"{what} is not a schema snapshot: it has no 'tables' mapping.",
            "Pass the 'schema' value returned by an earlier pg_inspect run with schema: true.",
        )
    if snapshot.get("format", SNAPSHOT_FORMAT) != SNAPSHOT_FORMAT:
        raise OperatorError(
            f"{what} has snapshot format {snapshot.get('format')!r}; this module reads format {SNAPSHOT_FORMAT}.",
            "Take the snapshot again with this version of pg_inspect.",
        )
    return snapshot


def diff_schemas(live: dict, expected: dict) -> list[str]:
    """Human-readable differences between two schema snapshots; [] when they are equal.

    ``live`` is the database inspected, ``expected`` the reference (another database or an
    earlier snapshot). "missing" means in expected but not in live; "only in live" the reverse.
    """
    out: list[str] = []
    live_tables, expected_tables = live.get("tables", {}), expected.get("tables", {})
    _each(live_tables, expected_tables, "table", out,
          both=lambda name, a, b: _diff_table(name, a, b, out))

    def view(name: str, a: dict, b: dict) -> None:
        if a.get("kind") != b.get("kind"):
            out.append(f"view {name}: kind differs (live {a.get('kind')}, expected {b.get('kind')})")
        elif a.get("definition") != b.get("definition"):
            out.append(f"view {name}: definition differs (live {a.get('definition')}; expected {b.get('definition')})")

    _each(live.get("views", {}), expected.get("views", {}), "view", out, both=view)

    def sequence(name: str, a: dict, b: dict) -> None:
        _diff_attributes(f"sequence {name}", a, b, sorted(set(a) | set(b)), out)

    _each(live.get("sequences", {}), expected.get("sequences", {}), "sequence", out, both=sequence)

    def enum(name: str, a: list, b: list) -> None:
        if list(a) != list(b):
            out.append(f"enum {name}: labels differ (live {', '.join(a)}; expected {', '.join(b)})")

    _each(live.get("enums", {}), expected.get("enums", {}), "enum", out, both=enum)
    return out


# --------------------------------------------------------------------------------------------
# Reading the database
# --------------------------------------------------------------------------------------------

def snapshot_schema(cur, tables: list[tuple[int, str, str]]) -> dict:
    """The schema as JSON-ready data: tables (columns, indexes, constraints), views, sequences, enums.

    Indexes that implement a primary key, unique or exclusion constraint are listed under the
    constraint only. Column order is not part of the snapshot (a down/up round trip may move a
    column without changing what the application sees).
    """
    names = {oid: qualified(schema, name) for oid, schema, name in tables}
    oids = list(names)
    snap: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "tables": {key: {"columns": {}, "indexes": {}, "constraints": {}} for key in sorted(names.values())},
    }
    cur.execute(
        "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum",
        (oids,),
    )
    for relid, column, type_, nullable, default, identity, generated in cur.fetchall():
        generated_kind = _GENERATED.get(generated or "")
        snap["tables"][names[int(relid)]]["columns"][column] = {
            "type": type_,
            "nullable": bool(nullable),
            "default": None if generated_kind else default,
            "identity": _IDENTITY.get(identity or ""),
            "generated": f"{generated_kind}: {default}" if generated_kind else None,
        }
    cur.execute(
        "SELECT i.indrelid, c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = ANY(%s::oid[]) AND NOT EXISTS ("
        "SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid "
        "AND k.contype IN ('p', 'u', 'x')) ORDER BY 1, 2",
        (oids,),
    )
    for relid, index, definition in cur.fetchall():
        snap["tables"][names[int(relid)]]["indexes"][index] = definition
    # contype 'n' (NOT NULL constraints, PostgreSQL 18) repeats the columns' nullability.
    cur.execute(
        "SELECT conrelid, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = ANY(%s::oid[]) AND contype <> 'n' ORDER BY 1, 2",
        (oids,),
    )
    for relid, name, contype, definition in cur.fetchall():
        snap["tables"][names[int(relid)]]["constraints"][name] = {
            "type": _CONSTRAINT_TYPES.get(contype, contype), "definition": definition,
        }
    cur.execute(
        "SELECT n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid) FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMA} AND "
        + NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid") + " ORDER BY 1, 2"
    )
    snap["views"] = {
        qualified(schema, name): {"kind": "materialized view" if kind == "m" else "view", "definition": definition}
        for schema, name, kind, definition in cur.fetchall()
    }
    cur.execute(
        "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, "
        "s.seqmax, s.seqcycle FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMA} AND "
        + NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid") + " ORDER BY 1, 2"
    )
    snap["sequences"] = {
        qualified(schema, name): {"type": type_, "start": int(start), "increment": int(inc), "min": int(lo),
                                  "max": int(hi), "cycle": bool(cycle)}
        for schema, name, type_, start, inc, lo, hi, cycle in cur.fetchall()
    }
    cur.execute(
        "SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid "
        f"WHERE {USER_SCHEMA} AND " + NOT_FROM_EXTENSION.format(catalog="'pg_type'", oid="t.oid")
        + " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    snap["enums"] = {qualified(schema, name): list(labels) for schema, name, labels in cur.fetchall()}
    return snap


def _section(cur, notes: list[str], name: str, read: Callable[[], Any]) -> Any:
    """Run one monitoring query under a savepoint; on failure note why and return None."""
    import psycopg2

    cur.execute("SAVEPOINT monitoring_section")
    try:
        value = read()
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK TO SAVEPOINT monitoring_section")
        notes.append(f"{name}: not available ({(exc.pgerror or str(exc)).strip().splitlines()[0]})")
        return None
    cur.execute("RELEASE SAVEPOINT monitoring_section")
    return value


def _top_statements(cur, notes: list[str]) -> list[dict] | None:
    from psycopg2 import sql

    cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                "WHERE e.extname = 'pg_stat_statements'")
    row = cur.fetchone()
    if row is None:
        notes.append("top_statements: the pg_stat_statements extension is not installed in this database "
                     "(CREATE EXTENSION pg_stat_statements, with it in shared_preload_libraries).")
        return None
    view = sql.SQL("{}.pg_stat_statements").format(sql.Identifier(row[0]))

    def read() -> list[dict]:
        cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(view))
        columns = {d[0] for d in cur.description}
        # PostgreSQL 13 renamed mean_time/total_time to mean_exec_time/total_exec_time.
        mean, total = ("mean_exec_time", "total_exec_time") if "mean_exec_time" in columns else ("mean_time",
                                                                                                   "total_time")
        cur.execute(
            sql.SQL("SELECT queryid, query, calls, {mean}, {total}, rows FROM {view} WHERE dbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "ORDER BY {mean} DESC NULLS LAST LIMIT %s").format(
                mean=sql.Identifier(mean), total=sql.Identifier(total), view=view),
            (TOP_STATEMENTS,),
        )
        return [
            {"queryid": None if qid is None else int(qid), "query": mask_sql_secrets(query), "calls": int(calls),
             "mean_exec_ms": round(float(mean_ms), 3), "total_exec_ms": round(float(total_ms), 3),
             "rows": int(rows)}
            for qid, query, calls, mean_ms, total_ms, rows in cur.fetchall()
        ]

    return _section(cur, notes, "top_statements", read)


def monitoring_snapshot(cur) -> dict:
    """The runbook's monitoring queries, as data. Each section is null (with a note) if it fails."""
    notes: list[str] = []
    cur.execute("SET LOCAL lock_timeout = %s", (f"{MONITORING_LOCK_TIMEOUT_S}s",))

    def table_sizes() -> list[dict]:
        cur.execute(
            "SELECT n.nspname, c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), "
            "pg_indexes_size(c.oid), c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMA} ORDER BY 3 DESC, 1, 2 LIMIT %s",
            (TOP_TABLES,),
        )
        return [
            {"table": qualified(schema, name), "total_bytes": int(total), "table_bytes": int(heap),
             "index_bytes": int(idx), "rows_estimate": None if tuples is None or tuples < 0 else int(tuples)}
            for schema, name, total, heap, idx, tuples in cur.fetchall()
        ]

    def index_usage() -> list[dict]:
        cur.execute(
            "SELECT s.schemaname, s.relname, s.indexrelname, s.idx_scan, pg_relation_size(s.indexrelid), "
            "i.indisunique FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
            "ORDER BY 1, 2, 3"
        )
        return [
            {"index": qualified(schema, index), "table": qualified(schema, table), "idx_scan": int(scans or 0),
             "size_bytes": int(size), "unique": bool(unique)}
            for schema, table, index, scans, size, unique in cur.fetchall()
        ]

    def connections() -> dict[str, int]:
        cur.execute("SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() GROUP BY 1 ORDER BY 1")
        return {state: int(count) for state, count in cur.fetchall()}

    def lock_waits() -> list[dict]:
        cur.execute(
            "SELECT pid, usename, application_name, wait_event, state, pg_blocking_pids(pid), "
            "extract(epoch FROM clock_timestamp() - query_start), query FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' ORDER BY pid"
        )
        return [
            {"pid": pid, "user": user, "application": app, "wait_event": event, "state": state,
             "blocked_by": list(blockers or []), "waiting_s": None if secs is None else round(float(secs), 3),
             "query": mask_sql_secrets(query)}
            for pid, user, app, event, state, blockers, secs, query in cur.fetchall()
        ]

    result: dict[str, Any] = {"top_statements": _top_statements(cur, notes)}
    result["table_sizes"] = _section(cur, notes, "table_sizes", table_sizes)
    usage = _section(cur, notes, "index_usage", index_usage)
    result["index_usage"] = usage
    # Unique indexes enforce constraints, so zero scans does not make them removable.
    result["unused_indexes"] = None if usage is None else [
        {"index": u["index"], "table": u["table"], "size_bytes": u["size_bytes"]}
        for u in usage if u["idx_scan"] == 0 and not u["unique"]
    ]
    result["connections"] = _section(cur, notes, "connections", connections)
    result["lock_waits"] = _section(cur, notes, "lock_waits", lock_waits)
    cur.execute("SELECT pg_database_size(current_database())")
    result["database_size_bytes"] = int(cur.fetchone()[0])
    result["taken_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["notes"] = notes
    return result


def run_smoke_queries(conn, queries: Iterable[str], timeout_s: int = SMOKE_TIMEOUT_S) -> list[dict]:
    """Run each query alone in a READ ONLY transaction that is rolled back; report, never raise."""
    import psycopg2

    results = []
    for query in queries:
        entry: dict[str, Any] = {"query": query, "ok": False, "result": None, "rows": None, "error": None,
                                 "sqlstate": None, "duration_s": 0.0}
        statements = split_statements(query or "")
        if len(statements) != 1:
            entry["error"] = (
                "A smoke query must be exactly one SQL statement; this one has "
                f"{len(statements)}. Give each statement as its own smoke query."
            )
            results.append(entry)
            continue
        started = time.monotonic()
        with conn.cursor() as cur:
            try:
                cur.execute("BEGIN TRANSACTION READ ONLY")
                cur.execute("SET LOCAL statement_timeout = %s", (f"{int(timeout_s)}s",))
                cur.execute(query)
                if cur.description is not None:
                    row = cur.fetchone()
                    entry["result"] = json_value(row[0]) if row else None
                entry["rows"] = cur.rowcount if cur.rowcount >= 0 else None
                entry["ok"] = True
            except psycopg2.Error as exc:
                entry["error"] = (exc.pgerror or str(exc)).strip()
                entry["sqlstate"] = exc.pgcode
            finally:
                entry["duration_s"] = round(time.monotonic() - started, 3)
                # If the connection is gone, the next query reports that.
                with contextlib.suppress(psycopg2.Error):
                    cur.execute("ROLLBACK")
        results.append(entry)
    return results


def _inspect_error(conn_info: ConnInfo, exc: Exception) -> OperatorError:
    text = (getattr(exc, "pgerror", None) or str(exc)).strip()
    return OperatorError(
        f"Inspecting database '{conn_info.dbname}' failed: {text}",
        "Check that the role in the URL may read the catalogs and the application's tables.",
    )


def _read_facts(conn, *, version_table: str, row_counts: bool, schema: bool, monitoring: bool) -> dict:
    with conn.cursor() as cur:
        cur.execute("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            version_oid = version_table_oid(cur, version_table)
            # A fixed search_path makes pg_get_*def and format_type name objects the same way for
            # every caller, so snapshots compare equal across sessions and users.
            cur.execute("SET LOCAL search_path = public")
            cur.execute("SET LOCAL lock_timeout = %s", (f"{LOCK_TIMEOUT_S}s",))
            tables = user_tables(cur, version_oid)
            facts: dict[str, Any] = {
                "revision": read_revisions(cur, version_table, version_oid),
                "tables": len(tables),
                "row_counts": count_rows(cur, tables) if row_counts else None,
                "schema": snapshot_schema(cur, user_tables(cur, version_oid, partitions=True)) if schema else None,
            }
            cur.execute("SELECT current_database(), pg_database_size(current_database())")
            facts["database"], size = cur.fetchone()
            facts["database_size_bytes"] = int(size)
            facts["monitoring"] = monitoring_snapshot(cur) if monitoring else None
            return facts
        finally:
            cur.execute("ROLLBACK")


def inspect_database(
    conn_info: ConnInfo,
    *,
    row_counts: bool = True,
    schema: bool = False,
    monitoring: bool = False,
    smoke_queries: Iterable[str] = (),
    version_table: str = "alembic_version",
    compare_with: ConnInfo | None = None,
    expected_schema: dict | None = None,
    smoke_timeout_s: int = SMOKE_TIMEOUT_S,
) -> dict:
    """Every fact pg_inspect returns, for one database (results are not redacted: the caller does)."""
    import psycopg2

    if expected_schema is not None:
        check_snapshot(expected_schema)
    want_snapshot = schema or compare_with is not None or expected_schema is not None
    # No session-level SET (such as default_transaction_read_only): behind a transaction-pooling
    # pgbouncer it would outlive us on a server connection other clients share. Every statement
    # we send runs in an explicit READ ONLY transaction instead.
    conn = conn_info.connect()
    try:
        try:
            facts = _read_facts(conn, version_table=version_table, row_counts=row_counts, schema=want_snapshot,
                                monitoring=monitoring)
            facts["server_version"] = server_version(conn)[1]
        except psycopg2.Error as exc:
            raise _inspect_error(conn_info, exc) from None
        facts["smoke"] = run_smoke_queries(conn, smoke_queries, smoke_timeout_s)
    finally:
        conn.close()

    live = facts["schema"]
    reference = expected_schema
    if compare_with is not None:
        other = compare_with.connect()
        try:
            reference = _read_facts(other, version_table=version_table, row_counts=False, schema=True,
                                    monitoring=False)["schema"]
        except psycopg2.Error as exc:
            raise _inspect_error(compare_with, exc) from None
        finally:
            other.close()
    facts["schema_diff"] = diff_schemas(live, reference) if reference is not None else []
    if not schema:
        facts["schema"] = None
    return facts


def free_space(path: str) -> dict:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    probe = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return {"path": path, "free_bytes": shutil.disk_usage(probe).free}
