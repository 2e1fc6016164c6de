#!/usr/bin/env python3
"""The way back from an irreversible revision: restoring just the table it touched vs restoring the whole backup.

    .venv/bin/python bench/table_restore_benchmark.py                 # ~1 GB on the embedded server
    .venv/bin/python bench/table_restore_benchmark.py --size-mb 200 --runs 2

The database: release_manager's chain at head, a big ``events`` table (most of the size, as an app's log) and a
mid-size ``accounts`` table (~10 %); a pg_backup of it (its default format). Then the failing migration's
irreversible revision rewrites ``accounts``, and the app writes to ``events`` meanwhile. Each run, alternately:

  tables   pg_restore_tables: ``accounts`` back from the backup, swapped in (the module's own duration_s)
  full     pg_restore over the database (confirm + clean), as the rollback's full restore does

Measured side by side in one run, several runs: median and spread of each, and the ratio per pair. Results go
to bench/table_restore_results.json and are printed as a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import embedded_postgres  # noqa: E402
import psycopg2  # noqa: E402
from run_benchmarks import execute  # noqa: E402
from support import run_module, with_database  # noqa: E402


def build(admin_url: str, name: str, size_mb: int) -> str:
    url = with_database(admin_url, name)
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(admin_url, f'CREATE DATABASE "{name}"')
    assert run_module("alembic_migrate", {"config": str(ROOT / "alembic.ini"), "url": url}).rc == 0
    events, accounts = size_mb * 900 * 1000 // 300, size_mb * 100 * 1000 // 300  # ~300 bytes a row
    execute(url, f"""
        CREATE TABLE accounts (id bigserial PRIMARY KEY, owner text NOT NULL, plan text NOT NULL,
                               balance numeric NOT NULL, notes text);
        CREATE INDEX ix_accounts_owner ON accounts (owner);
        INSERT INTO accounts (owner, plan, balance, notes)
          SELECT 'owner-' || g, (ARRAY['free','team','enterprise'])[1 + g % 3], g % 10000,
                 md5(g::text) || repeat(' note', 40) FROM generate_series(1, {accounts}) g;
        CREATE TABLE events (id bigserial PRIMARY KEY, account_id bigint, kind text, at timestamptz, payload text);
        INSERT INTO events (account_id, kind, at, payload)
          SELECT g % {accounts} + 1, (ARRAY['login','deploy','rollback'])[1 + g % 3],
                 now() - (g || ' seconds')::interval, md5(g::text) || md5((g * 7)::text) || repeat(' x', 100)
          FROM generate_series(1, {events}) g;
        CREATE INDEX ix_events_account ON events (account_id);
        ANALYZE;""")
    return url


def migrate_badly(url: str) -> None:
    """The irreversible revision (accounts rewritten), the table it created, the app's writes since."""
    execute(url, "UPDATE accounts SET plan = upper(plan); CREATE TABLE account_flags (id bigint PRIMARY KEY); "
                 "INSERT INTO events (account_id, kind, at, payload) SELECT 1, 'since', now(), 'written after the "
                 "backup' FROM generate_series(1, 1000); UPDATE alembic_version SET version_num = 'f00d00000001'")


def one_pair(url: str, backup: str, head: str, run: int) -> tuple[float, float]:
    migrate_badly(url)
    tables = run_module("pg_restore_tables", {"url": url, "src": backup, "tables": ["accounts"],
                                              "created": ["account_flags"], "revision": [head], "run_id": f"b{run}"})
    assert tables.rc == 0, tables.output[-2000:]
    kept = _count(url, "SELECT count(*) FROM events WHERE kind = 'since'")
    execute(url, f"DROP SCHEMA rm_replaced_b{run} CASCADE; DELETE FROM events WHERE kind = 'since'; CHECKPOINT")
    migrate_badly(url)
    execute(url, "CHECKPOINT")
    full = run_module("pg_restore", {"url": url, "src": backup, "confirm": True, "clean": True})
    assert full.rc == 0, full.output[-2000:]
    lost = _count(url, "SELECT count(*) FROM events WHERE kind = 'since'")
    print(f"run {run}: tables {tables.result['duration_s']} s (swap {tables.result['swap_s']} s, kept {kept} "
          f"writes), full {full.result['duration_s']} s (kept {lost})", flush=True)
    return float(tables.result["duration_s"]), float(full.result["duration_s"])


def _count(url: str, sql: str) -> int:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(sql)
        value = cur.fetchone()[0]
    conn.close()
    return int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin-url", help="a server's admin URL (default: the embedded PostgreSQL)")
    args = parser.parse_args()
    admin = args.admin_url or embedded_postgres.start()["admin_url"]
    url = build(admin, "rm_bench_tables", args.size_mb)
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        head = cur.fetchone()[0]
        cur.execute("SELECT pg_database_size(current_database()), pg_total_relation_size('accounts'), "
                    "current_setting('server_version')")
        size, accounts, version = cur.fetchone()
    conn.close()
    workdir = Path(tempfile.mkdtemp(prefix="rm-bench-tables-"))
    workdir.chmod(0o755)  # the embedded server's OS user reads the backup too
    backup = run_module("pg_backup", {"url": url, "dest": str(workdir), "keep": 1})
    assert backup.rc == 0, backup.output[-2000:]
    pairs = [one_pair(url, backup.result["path"], head, run) for run in range(1, args.runs + 1)]
    report(pairs, {"database_bytes": size, "accounts_bytes": accounts, "server_version": version,
                   "client_version": backup.result.get("client_version"), "backup_format": backup.result["format"],
                   "backup_bytes": backup.result.get("size_bytes"), "runs": args.runs, "size_mb": args.size_mb,
                   "command": "bench/table_restore_benchmark.py " + " ".join(sys.argv[1:])})
    execute(admin, 'DROP DATABASE IF EXISTS "rm_bench_tables" WITH (FORCE)')


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def report(pairs: list[tuple[float, float]], facts: dict) -> None:
    tables, full = [p[0] for p in pairs], [p[1] for p in pairs]
    ratios = [f / t for t, f in pairs]
    result = {**facts, "tables_s": tables, "full_s": full, "ratio_full_over_tables": ratios,
              "tables_median_s": statistics.median(tables), "full_median_s": statistics.median(full),
              "ratio_median": statistics.median(ratios)}
    (ROOT / "bench" / "table_restore_results.json").write_text(json.dumps(result, indent=2) + "\n")
    mb = facts["database_bytes"] / 2**20
    print(f"""
### The way back from an irreversible revision: its table vs the whole backup

Database {mb:.0f} MiB (PostgreSQL {facts['server_version']}, client tools {facts['client_version']}), the touched
table `accounts` {facts['accounts_bytes'] / 2**20:.0f} MiB, backup format `{facts['backup_format']}`,
{facts['runs']} runs (`{facts['command']}`).

| | median (s) | spread (s) |
|---|---|---|
| `pg_restore_tables` (accounts, swap included) | {result['tables_median_s']:.1f} | {spread(tables)} |
| full restore (`pg_restore`, confirm + clean) | {result['full_median_s']:.1f} | {spread(full)} |

The table restore is **{result['ratio_median']:.1f}x** faster (per pair: {', '.join(f'{r:.1f}' for r in ratios)}),
and it keeps every write made to the other tables since the backup; the full restore loses them.
""")


if __name__ == "__main__":
    main()
