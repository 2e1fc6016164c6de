"""The runbook's "top statements by mean time" read from a real pg_stat_statements (a throwaway PostgreSQL
15 with the library preloaded), with every literal of the statements masked."""

from __future__ import annotations

import pytest
from ansible.module_utils.db_inspect import inspect_database
from ansible.module_utils.pg_connection import ConnInfo
from support import sql, with_database

pytestmark = pytest.mark.db


def test_top_statements_come_from_pg_stat_statements_with_literals_masked(stats_server):
    url = with_database(stats_server, "postgres")
    sql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    sql(url, "SELECT pg_stat_statements_reset()")
    sql(url, "CREATE TABLE IF NOT EXISTS t (id int, secret text)")
    for i in range(20):
        sql(url, "SELECT count(*), pg_sleep(0.001) FROM t WHERE secret = %s", (f"Sp3cial-{i}",))
    sql(url, "SELECT 'ToP-SeCrEt-literal' AS x, pg_sleep(0.05)")
    monitoring = inspect_database(ConnInfo.parse(url), monitoring=True, row_counts=False)["monitoring"]
    top = monitoring["top_statements"]
    assert top and all({"query", "calls", "mean_exec_ms", "total_exec_ms", "rows"} <= set(q) for q in top)
    assert [q["mean_exec_ms"] for q in top] == sorted((q["mean_exec_ms"] for q in top), reverse=True)
    counted = next(q for q in top if "FROM t WHERE secret" in q["query"])
    assert counted["calls"] == 20 and "$1" in counted["query"]
    assert not any("Sp3cial" in q["query"] or "ToP-SeCrEt" in q["query"] for q in top)
    assert not [n for n in monitoring["notes"] if n.startswith("top_statements")]
