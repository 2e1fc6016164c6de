"""The facts pg_inspect returns about one database, read in one consistent, read-only snapshot.

The revision, exact row counts and (optionally) the schema snapshot come from one ``REPEATABLE READ READ
ONLY`` transaction, then the smoke queries and the monitoring snapshot; a schema can be compared with
another database or with an earlier snapshot. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ansible.module_utils.db_monitoring import monitoring_snapshot
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_catalog import count_rows, read_revisions, user_tables, version_table_oid
from ansible.module_utils.pg_connection import ConnInfo, server_version
from ansible.module_utils.schema_snapshot import check_snapshot, diff_schemas, snapshot_schema
from ansible.module_utils.smoke_queries import SMOKE_TIMEOUT_S, run_smoke_queries

# Counting rows waits for AccessShareLock; behind a migration's ACCESS EXCLUSIVE lock we give up
# after this long rather than hang the play (the message says who to look for).
LOCK_TIMEOUT_S = 30


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
