"""The runbook's monitoring queries as data: top statements, table sizes, index usage, connections, lock waits.

Best effort: a section that fails (no pg_stat_statements, a lock not granted within a few seconds) is
null with a note; query texts have every literal masked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.pg_catalog import USER_SCHEMA, qualified
from ansible.module_utils.sql_text import mask_sql_secrets

# Monitoring is best effort: a section that cannot take its lock quickly is reported as null.
MONITORING_LOCK_TIMEOUT_S = 5
TOP_STATEMENTS = 10
TOP_TABLES = 20


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

    def read() -> list[dict]:  # PostgreSQL 13 and later (mean_exec_time, total_exec_time)
        cur.execute(
            sql.SQL("SELECT queryid, query, calls, mean_exec_time, total_exec_time, rows FROM {view} WHERE dbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "ORDER BY mean_exec_time DESC NULLS LAST LIMIT %s").format(view=view),
            (TOP_STATEMENTS,),
        )
        return [
            {"queryid": None if qid is None else int(qid), "query": mask_sql_secrets(query), "calls": int(calls),
             "mean_exec_ms": round(float(mean_ms), 3), "total_exec_ms": round(float(total_ms), 3),
             "rows": int(rows)}
            for qid, query, calls, mean_ms, total_ms, rows in cur.fetchall()
        ]

    return _section(cur, notes, "top_statements", read)


def _table_sizes(cur) -> list[dict]:
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


def _index_usage(cur) -> list[dict]:
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


def _connections(cur) -> dict[str, int]:
    cur.execute("SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() GROUP BY 1 ORDER BY 1")
    return {state: int(count) for state, count in cur.fetchall()}


def _lock_waits(cur) -> list[dict]:
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


def monitoring_snapshot(cur) -> dict:
    """The runbook's monitoring queries, as data. Each section is null (with a note) if it fails."""
    notes: list[str] = []
    cur.execute("SET LOCAL lock_timeout = %s", (f"{MONITORING_LOCK_TIMEOUT_S}s",))
    result: dict[str, Any] = {"top_statements": _top_statements(cur, notes)}
    result["table_sizes"] = _section(cur, notes, "table_sizes", lambda: _table_sizes(cur))
    usage = _section(cur, notes, "index_usage", lambda: _index_usage(cur))
    result["index_usage"] = usage
    # Unique indexes enforce constraints, so zero scans does not make them removable.
    result["unused_indexes"] = None if usage is None else [
        {"index": u["index"], "table": u["table"], "size_bytes": u["size_bytes"]}
        for u in usage if u["idx_scan"] == 0 and not u["unique"]
    ]
    result["connections"] = _section(cur, notes, "connections", lambda: _connections(cur))
    result["lock_waits"] = _section(cur, notes, "lock_waits", lambda: _lock_waits(cur))
    cur.execute("SELECT pg_database_size(current_database())")
    result["database_size_bytes"] = int(cur.fetchone()[0])
    result["taken_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["notes"] = notes
    return result
