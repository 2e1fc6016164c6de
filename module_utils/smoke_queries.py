"""Smoke queries: each alone in a READ ONLY transaction that is rolled back, reported, never raised.

A smoke query must be one statement, so it cannot COMMIT its way out of its transaction; each has a
statement_timeout. The first value of the first row is returned as JSON.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

from ansible.module_utils.sql_text import split_statements

SMOKE_TIMEOUT_S = 30


def json_value(value: Any) -> Any:
    """A smoke query's result as JSON: numbers, booleans and null as they are, anything else as text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


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
