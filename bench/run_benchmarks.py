#!/usr/bin/env python3
"""Benchmarks behind the figures in BENCHMARKS.md, measured as ratios within one run.

    make bench                                   # both shapes at ~1 GB, 5 alternated runs each
    .venv/bin/python bench/run_benchmarks.py --size-mb 100 --runs 3 --only backup,restore   # a quick run

Every comparison alternates its ways (A B C A B C ...) on the same database in one run, starts each timed
step from the same state (the target dropped, a CHECKPOINT, all untimed) and reports each way's median
seconds with min-max, and the median (min-max) of the per-run ratios against the yardstick.

Shapes (--shapes):
  deployments  release_manager's chain at head, ~90 % of the data in one table (deployments, with a log
               column that gzip -6 compresses ~5.5:1, like the runbook's own 1 GB -> 186 MiB)
  jsonb        one large JSONB table of less compressible values (uuids, hashes, random numbers; ~2.6:1)
               with two indexes (~60 % of the data) plus four mid-size tables with foreign keys

Sections (--only):
  backup    the floor (bare `pg_dump -f file`, uncompressed), the runbook's `pg_dump | gzip`, pg_backup's
            default (checksum, manifest and verification included), directory, custom
  restore   the runbook's `gunzip -c | psql` vs pg_restore of every format (checksum check, row counts and
            revision read included)
  drill     pg_restore as the drill calls it (into the scratch database it has just created) and with
            clean/confirm, vs the bare tool restoring the same backup (`gunzip -c | psql`, `pg_restore -j 2`)
  recovery  a failing migration on the deployments shape: from the failure to "back at the starting
            revision", by downgrade and by restore, per step
  scale     backup and restore at 100, 500 and 1000 MB (--scale-sizes) on the deployments shape, with a
            plot (bench/scale.png; matplotlib from bench/requirements.txt)
  migrate   migrate.yml's own overhead: wall time minus the database work its modules report
  stall     the worst query stall under pgbench while a migration waits behind an 8 s transaction
Results go to bench/results.json and are printed as Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import embedded_postgres  # noqa: E402
import psycopg2  # noqa: E402
from support import run_module, run_playbook, with_database  # noqa: E402

RESULTS: dict = {}
# Events per MB of database asked for in the jsonb shape (1.3 M events ~ 1 GB with its other tables).
JSONB_EVENTS_PER_MB = 1300


# --- helpers ---------------------------------------------------------------------------------------


def sh(cmd: str, env: dict | None = None) -> float:
    """Run a shell pipeline (the runbook's way), fail on any stage's error, return seconds."""
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - started


def execute(url: str, sql: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def query(url: str, sql: str):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def settle(url: str) -> None:
    """Start every timed step from the same state: no dirty buffers or WAL left by the step before."""
    execute(url, "CHECKPOINT")


def drop(admin_url: str, name: str) -> None:
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def module(name: str, args: dict) -> dict:
    result = run_module(name, args)
    assert result.rc == 0, result.output[-3000:]
    return result.result


def dbname_of(url: str) -> str:
    from ansible.module_utils.pg_connection import ConnInfo  # type: ignore

    return ConnInfo.parse(url).dbname


def conn_env(url: str) -> tuple[str, dict]:
    from ansible.module_utils.pg_connection import ConnInfo  # type: ignore

    info = ConnInfo.parse(url)
    return info.libpq_url, info.libpq_env()


def alternate(ways: dict[str, Callable[[], object]], runs: int, before: Callable[[str], None]) -> dict[str, list]:
    """Run the ways in turn, ``runs`` times (A B C A B C ...); ``before(way)`` is untimed. Seconds per way."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for run in range(runs):
        for name, way in ways.items():
            before(name)
            started = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - started)
            print(f"  run {run + 1}/{runs} {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def summarize(times: dict[str, list[float]], yardstick: str, faster_is: str = "speedup") -> dict[str, dict]:
    """Median and spread of each way's seconds, and of its per-run ratio against ``yardstick``:
    ``speedup`` = yardstick / way (>1: faster), ``ratio`` = way / yardstick (the backup against its floor)."""
    out = {}
    for name, seconds in times.items():
        per_run = [(y / s if faster_is == "speedup" else s / y) for y, s in zip(times[yardstick], seconds,
                                                                                  strict=True)]
        out[name] = {"seconds": _spread(seconds), faster_is: _spread(per_run), "runs": len(seconds)}
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


# --- the data shapes -------------------------------------------------------------------------------


def build_deployments(admin_url: str, name: str, size_mb: int) -> str:
    """release_manager's chain at head, filled with about size_mb of rows that compress like real data."""
    url = with_database(admin_url, name)
    drop(admin_url, name)
    execute(admin_url, f'CREATE DATABASE "{name}"')
    module("alembic_migrate", {"config": str(ROOT / "alembic.ini"), "url": url, "revision": "head"})
    # ~1 KB per deployment row; releases and users scale with it.
    deployments = size_mb * 1000
    releases = max(1000, deployments // 20)
    users = max(1000, deployments // 50)
    execute(url, f"""
        INSERT INTO users (name, email)
          SELECT 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, {users}) i;
        INSERT INTO releases (version, status, created_at, metadata)
          SELECT '1.' || (i / 100) || '.' || (i % 100),
                 (ARRAY['draft','released','retired'])[1 + i % 3],
                 now() - make_interval(mins => i),
                 jsonb_build_object('commit', md5(i::text), 'notes', repeat('change ' || (i % 50) || ' ', 8))
          FROM generate_series(1, {releases}) i;
        INSERT INTO deployments (release_id, status, created_at, completed_at)
          SELECT 1 + (i % {releases}), (ARRAY['pending','running','succeeded','failed'])[1 + i % 4],
                 now() - make_interval(secs => i), now() - make_interval(secs => i - 30)
          FROM generate_series(1, {deployments}) i;
    """)
    # Widen rows with a realistic free-text column so the database reaches the asked size.
    execute(url, "ALTER TABLE deployments ADD COLUMN IF NOT EXISTS log text")
    # Hashes (digests, ids) do not compress; the step lines do, like real deploy logs: about 5:1 with
    # gzip -6, as the runbook's own measurement (1 GB -> 186 MiB).
    execute(url, "UPDATE deployments SET log = concat_ws(' ', 'deploy', md5(id::text), 'image sha256:' || "
                 "md5((id * 3)::text) || md5((id * 5)::text), 'to cluster', (id % 7), 'took', (id % 300), 's;', "
                 "repeat('step ' || (id % 13) || ' ok: pulled registry.internal/release-manager:' || (id % 97) "
                 "|| ' in ' || (id % 1000) || 'ms; ', 6), 'trace', md5((id * 7)::text))")
    return url


JSONB_SQL = """
SELECT setseed(0.42);
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
  plan text NOT NULL, created_at timestamptz NOT NULL, profile jsonb NOT NULL);
CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL UNIQUE, title text NOT NULL,
  price numeric(10,2) NOT NULL, attributes jsonb NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts,
  status text NOT NULL, total numeric(12,2) NOT NULL, created_at timestamptz NOT NULL,
  shipping_address text NOT NULL);
CREATE INDEX orders_account_id ON orders (account_id);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders, line int NOT NULL,
  product_id int NOT NULL REFERENCES products, qty int NOT NULL, price numeric(10,2) NOT NULL,
  PRIMARY KEY (order_id, line));
CREATE TABLE events (id bigint PRIMARY KEY, account_id bigint NOT NULL, kind text NOT NULL,
  created_at timestamptz NOT NULL, payload jsonb NOT NULL);
CREATE INDEX events_account_created ON events (account_id, created_at);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('e1e2e3e4e5e6');
INSERT INTO accounts SELECT i, 'account ' || md5(i::text),
  'a' || i || '@' || substr(md5((i * 7)::text), 1, 8) || '.example.com',
  (ARRAY['free','team','business','enterprise'])[1 + i % 4], now() - make_interval(mins => i),
  jsonb_build_object('company', 'company ' || md5((i * 11)::text), 'vat', upper(substr(md5((i * 13)::text), 1, 12)),
    'seats', (random() * 500)::int, 'billing', jsonb_build_object('iban', 'DE' || (random() * 1e18)::bigint,
    'card_last4', lpad(((random() * 9999)::int)::text, 4, '0')), 'api_key', md5(random()::text) || md5(random()::text))
  FROM generate_series(1, {n} / 10) i;
INSERT INTO products SELECT i, 'SKU-' || upper(substr(md5(i::text), 1, 10)), 'product ' || md5((i * 3)::text),
  round((random() * 500)::numeric, 2), jsonb_build_object('color', (ARRAY['red','green','blue','black'])[1 + i % 4],
  'weight_g', (random() * 5000)::int, 'barcode', substr(md5(random()::text), 1, 13),
  'dims', jsonb_build_array(random(), random(), random()))
  FROM generate_series(1, {n} / 50) i;
INSERT INTO orders SELECT i, 1 + (random() * ({n} / 10 - 1))::bigint,
  (ARRAY['new','paid','shipped','cancelled'])[1 + i % 4], round((random() * 2000)::numeric, 2),
  now() - make_interval(secs => i * 13),
  (random() * 9999)::int || ' ' || (ARRAY['Main','Oak','Pine','Maple','Cedar'])[1 + i % 5] || ' Street, '
    || lpad(((random() * 99999)::int)::text, 5, '0') || ' '
    || (ARRAY['Springfield','Riverton','Lakeside','Hillview'])[1 + i % 4] || ', ' || md5(random()::text)
  FROM generate_series(1, {n} / 2) i;
INSERT INTO order_items SELECT o, l, 1 + ((o * 7 + l * 13) % ({n} / 50)), 1 + (o + l) % 5,
  round((random() * 500)::numeric, 2)
  FROM generate_series(1, {n} / 2) o, generate_series(1, 3) l;
INSERT INTO events SELECT i, 1 + (random() * ({n} / 10 - 1))::bigint,
  (ARRAY['page_view','api_call','login','purchase','error'])[1 + (random() * 4)::int],
  now() - make_interval(secs => i),
  jsonb_build_object('request_id', gen_random_uuid(), 'session', md5(random()::text),
    'ip', (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int || '.'
      || (random() * 255)::int,
    'latency_ms', round((random() * 2000)::numeric, 3),
    'status', (ARRAY[200,200,200,201,304,404,500])[1 + (random() * 6)::int],
    'path', '/api/v2/' || (ARRAY['orders','accounts','products','search','cart'])[1 + (random() * 4)::int]
      || '/' || (random() * 100000)::int,
    'trace', encode(sha256(random()::text::bytea), 'base64'),
    'metrics', jsonb_build_object('cpu', random(), 'mem', (random() * 1e9)::bigint, 'gc', (random() * 50)::int))
  FROM generate_series(1, {n}) i;
"""


def build_jsonb(admin_url: str, name: str, size_mb: int) -> str:
    """One big JSONB table of values that compress poorly (~60 % of the data) and four mid-size tables."""
    url = with_database(admin_url, name)
    drop(admin_url, name)
    execute(admin_url, f'CREATE DATABASE "{name}"')
    execute(url, JSONB_SQL.format(n=max(5000, size_mb * JSONB_EVENTS_PER_MB)))
    return url


SHAPES = {"deployments": build_deployments, "jsonb": build_jsonb}


def build(admin_url: str, shape: str, size_mb: int) -> str:
    name = f"bench_{shape}_{size_mb}"
    started = time.perf_counter()
    url = SHAPES[shape](admin_url, name, size_mb)
    execute(url, "VACUUM ANALYZE")
    size = query(url, "SELECT pg_database_size(current_database())")[0][0]
    tables = query(url, "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 2 DESC")
    RESULTS.setdefault("databases", {})[name] = {
        "shape": shape, "size_bytes": size, "build_s": round(time.perf_counter() - started, 1),
        "largest_table_share": round(tables[0][1] / size, 2) if tables else None}
    print(f"built {name}: {size / 2**20:.0f} MiB", flush=True)
    return url


# --- backup ----------------------------------------------------------------------------------------

BACKUP_FORMATS = {
    "pg_backup default": {},  # binary: big tables' rows in binary COPY form
    "pg_backup plain": {"format": "plain"},
    "pg_backup directory -j 2": {"format": "directory", "jobs": 2},
    "pg_backup custom": {"format": "custom"},
    "pg_backup tar": {"format": "tar"},
}


def bench_backup(url: str, bin_dir: str, out: Path, runs: int, formats: list[str]) -> dict[str, Path]:
    """The floor, the runbook and pg_backup's formats, alternated. Returns the last file of each way."""
    _, env = conn_env(url)
    files = {"floor": out / "floor.sql", "runbook": out / "runbook.sql.gz"}
    results: dict[str, dict] = {}
    ways: dict[str, Callable[[], object]] = {
        "floor: pg_dump -f (plain, uncompressed)": lambda: sh(f"'{bin_dir}/pg_dump' -f '{files['floor']}'", env),
        "runbook: pg_dump | gzip": lambda: sh(f"'{bin_dir}/pg_dump' | gzip > '{files['runbook']}'", env),
    }
    for label in formats:
        dest = out / label.replace(" ", "_")

        def take(label=label, dest=dest) -> None:
            result = module("pg_backup", {"url": url, "dest": str(dest), "pg_bin_dir": bin_dir,
                                          **BACKUP_FORMATS[label]})
            assert result["manifest"]["verified"], result
            results[label] = result
            files[label] = Path(result["path"])
        ways[label] = take

    def before(way: str) -> None:
        if way.startswith(("floor", "runbook")):
            files[way.split(":")[0]].unlink(missing_ok=True)
        if way in formats:
            shutil.rmtree(out / way.replace(" ", "_"), ignore_errors=True)
        settle(url)

    times = alternate(ways, runs, before)
    rows = summarize(times, "floor: pg_dump -f (plain, uncompressed)", faster_is="ratio")
    runbook = summarize(times, "runbook: pg_dump | gzip")
    runbook_bytes = size_of(files["runbook"])
    for label, row in rows.items():
        path = files["floor"] if label.startswith("floor") else files["runbook"] if label.startswith("runbook") \
            else files[label]
        row["speedup_vs_runbook"] = runbook[label]["speedup"]
        row["bytes"] = size_of(path)
        row["size_vs_runbook"] = round(row["bytes"] / runbook_bytes, 3)
        if label in results:
            row["module_duration_s"] = results[label]["duration_s"]
            row["verify_method"] = results[label]["manifest"]["verify_method"]
    return {"rows": rows, "files": files}


# --- restore ---------------------------------------------------------------------------------------

RESTORE_OF = {"pg_restore default (binary)": "pg_backup default", "pg_restore plain": "pg_backup plain",
              "pg_restore directory -j 2": "pg_backup directory -j 2",
              "pg_restore custom -j 2": "pg_backup custom", "pg_restore tar": "pg_backup tar"}


def bench_restore(source_url: str, admin_url: str, bin_dir: str, files: dict[str, Path], runs: int) -> dict:
    """The runbook's `gunzip -c | psql` against pg_restore of every format taken, into new databases."""
    source_counts = _counts(source_url)
    source_db = dbname_of(source_url)
    target = with_database(admin_url, "bench_restore")
    libpq_url, env = conn_env(target)
    details: dict[str, dict] = {}
    ways: dict[str, Callable[[], object]] = {
        "runbook: gunzip -c | psql": lambda: sh(
            f"gunzip -c '{files['runbook']}' | '{bin_dir}/psql' -X -q -v ON_ERROR_STOP=1 '{libpq_url}' >/dev/null",
            env),
    }
    for label, backup in RESTORE_OF.items():
        if backup not in files:
            continue

        def restore(label=label, backup=backup) -> None:
            result = module("pg_restore", {"url": target, "src": str(files[backup]), "jobs": 2,
                                           "source_database": source_db, "pg_bin_dir": bin_dir})
            assert result["row_counts"] == source_counts, (label, result["row_counts"], source_counts)
            details[label] = {k: result.get(k) for k in ("duration_s", "restore_duration_s", "load", "timings")}
        ways[label] = restore

    def before(way: str) -> None:
        drop(admin_url, "bench_restore")
        if way.startswith("runbook"):
            execute(admin_url, 'CREATE DATABASE "bench_restore"')
        settle(admin_url)

    rows = summarize(alternate(ways, runs, before), "runbook: gunzip -c | psql")
    for label, extra in details.items():
        rows[label]["last_run"] = extra
    drop(admin_url, "bench_restore")
    return rows


def _counts(url: str) -> dict[str, int]:
    return module("pg_inspect", {"url": url, "row_counts": True, "schema": False})["row_counts"]


# --- drill -----------------------------------------------------------------------------------------


def bench_drill(source_url: str, admin_url: str, bin_dir: str, files: dict[str, Path], runs: int) -> dict:
    """The drill's restore (pg_restore into the scratch database the drill has just created, jobs 2) vs the
    bare tool loading the same backup; and the same restore with clean/confirm (the parallel load)."""
    source_db = dbname_of(source_url)
    target = with_database(admin_url, "bench_drill")
    libpq_url, env = conn_env(target)
    backup = files["pg_backup default"]
    # The bare tools loading the same (binary) backup: its restore by hand, psql and gzip (README).
    by_hand = (f"cd '{backup}' && {{ gunzip -c schema.sql.gz; cat rows.psql; gunzip -c data.sql.gz; }} | "
               f"'{bin_dir}/psql' -X -q -v ON_ERROR_STOP=1 --single-transaction '{libpq_url}' >/dev/null")
    ways: dict[str, Callable[[], object]] = {
        "bare: the backup by hand (gunzip, psql \\copy)": lambda: sh(by_hand, env),
        "drill's pg_restore (create: false, jobs 2)": lambda: module("pg_restore", {
            "url": target, "src": str(backup), "create": False, "jobs": 2, "source_database": source_db,
            "pg_bin_dir": bin_dir}),
        "pg_restore with clean + confirm (jobs 2)": lambda: module("pg_restore", {
            "url": target, "src": str(backup), "clean": True, "confirm": True, "jobs": 2,
            "source_database": source_db, "pg_bin_dir": bin_dir}),
    }
    directory = files.get("pg_backup directory -j 2")
    if directory is not None:
        ways["bare: pg_restore -j 2 of the directory backup"] = lambda: sh(
            f"'{bin_dir}/pg_restore' -j 2 --no-owner --no-privileges -d '{libpq_url}' '{directory}'", env)
        ways["drill's pg_restore of the directory backup"] = lambda: module("pg_restore", {
            "url": target, "src": str(directory), "create": False, "jobs": 2, "source_database": source_db,
            "pg_bin_dir": bin_dir})

    def before(way: str) -> None:
        drop(admin_url, "bench_drill")
        execute(admin_url, 'CREATE DATABASE "bench_drill"')  # the drill's pg_database step (untimed)
        settle(admin_url)

    times = alternate(ways, runs, before)
    rows = summarize(times, "bare: the backup by hand (gunzip, psql \\copy)", faster_is="ratio")
    if directory is not None:
        pair = {k: times[k] for k in ("bare: pg_restore -j 2 of the directory backup",
                                      "drill's pg_restore of the directory backup")}
        rows.update(summarize(pair, "bare: pg_restore -j 2 of the directory backup", faster_is="ratio"))
    drop(admin_url, "bench_drill")
    return rows


# --- recovery of a failed migration ---------------------------------------------------------------

CHAIN_HEAD = "9c2b3f1a4e5d"
INDEX_REVISION = '''"""bench: an index on deployments (real work on a big table)"""
from alembic import op

revision = "bench0000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_deployments_release_status", "deployments", ["release_id", "status"])


def downgrade():
    op.drop_index("ix_deployments_release_status", table_name="deployments")
'''
FAILING_REVISION = '''"""bench: a revision that fails after scanning the big table (a CHECK no row-set satisfies)"""
import sqlalchemy as sa
from alembic import op

revision = "bench0000002"
down_revision = "bench0000001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("deployments", sa.Column("region", sa.Text()))
    op.execute("ALTER TABLE deployments ADD CONSTRAINT ck_deployments_log_short CHECK (length(log) < 100)")


def downgrade():
    op.drop_column("deployments", "region")
'''


def failing_chain(out: Path) -> Path:
    """A copy of the project's chain with two revisions on top: an index, then one that fails."""
    chain = out / "failing-chain"
    for name in ("alembic", "release_manager"):
        shutil.copytree(ROOT / name, chain / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "alembic.ini", chain / "alembic.ini")
    versions = chain / "alembic" / "versions"
    (versions / "bench0000001_index.py").write_text(INDEX_REVISION.format(down=CHAIN_HEAD))
    (versions / "bench0000002_fails.py").write_text(FAILING_REVISION)
    return chain / "alembic.ini"


def _fail_migration(ini: Path, url: str) -> dict:
    """Run the chain up to its failing head; the first revision stays applied (one transaction each)."""
    started = time.perf_counter()
    run = run_module("alembic_migrate", {"config": str(ini), "url": url, "revision": "heads"})
    assert run.rc != 0 and "bench0000002" in run.output, run.output[-2000:]
    steps = {s["revision"]: s["duration_s"] for s in run.result.get("steps") or []}
    return {"apply_until_failure_s": round(time.perf_counter() - started, 3), "applied_before_failure": steps,
            "current": run.result.get("current")}


def _back_at_start(url: str) -> float:
    """What the rollback role does last: pg_inspect (revision and row counts); must be back at the start."""
    started = time.perf_counter()
    inspected = module("pg_inspect", {"url": url, "row_counts": True, "schema": False})
    assert inspected["revision"] == [CHAIN_HEAD], inspected["revision"]
    return round(time.perf_counter() - started, 3)


def bench_recovery(url: str, bin_dir: str, out: Path, runs: int) -> dict:
    """From the failure of a migration to 'back at the starting revision', by downgrade and by restore."""
    ini = failing_chain(out)
    source_db = dbname_of(url)
    backup = module("pg_backup", {"url": url, "dest": str(out / "pre-change"), "pg_bin_dir": bin_dir})
    by_downgrade, by_restore = [], []
    for _ in range(runs):
        settle(url)
        failed = _fail_migration(ini, url)
        settle(url)
        started = time.perf_counter()
        down = module("alembic_migrate", {"config": str(ini), "url": url, "revision": CHAIN_HEAD,
                                          "allow_downgrade": True})
        downgrade_s = time.perf_counter() - started
        check_s = _back_at_start(url)
        by_downgrade.append({**failed, "downgrade_s": round(downgrade_s, 3), "check_s": check_s,
                             "steps": {s["revision"]: s["duration_s"] for s in down.get("steps") or []},
                             "recovery_s": round(downgrade_s + check_s, 3)})
        settle(url)
        failed = _fail_migration(ini, url)
        settle(url)
        started = time.perf_counter()
        restored = module("pg_restore", {"url": url, "src": backup["path"], "clean": True, "confirm": True,
                                         "source_database": source_db, "pg_bin_dir": bin_dir})
        restore_s = time.perf_counter() - started
        check_s = _back_at_start(url)
        by_restore.append({**failed, "restore_s": round(restore_s, 3), "check_s": check_s,
                           "timings": restored.get("timings"), "load": restored.get("load"),
                           "recovery_s": round(restore_s + check_s, 3)})
    return {"by_downgrade": by_downgrade, "by_restore": by_restore,
            "recovery_s": {"by_downgrade": _spread([r["recovery_s"] for r in by_downgrade]),
                           "by_restore": _spread([r["recovery_s"] for r in by_restore])},
            "backup": {"path": Path(backup["path"]).name, "size_bytes": backup["size_bytes"]}}


# --- scale -----------------------------------------------------------------------------------------


def bench_scale(admin_url: str, bin_dir: str, out: Path, sizes: list[int], runs: int, shape: str) -> dict:
    """Backup and restore (default, and the runbook's) at several sizes of one shape."""
    points = {}
    for size in sizes:
        url = build(admin_url, shape, size)
        work = out / f"scale-{size}"
        work.mkdir()
        backup = bench_backup(url, bin_dir, work, runs, ["pg_backup default"])
        restore = bench_restore(url, admin_url, bin_dir, backup["files"], runs)
        points[size] = {"database_bytes": RESULTS["databases"][f"bench_{shape}_{size}"]["size_bytes"],
                        "backup": backup["rows"], "restore": restore}
        drop(admin_url, f"bench_{shape}_{size}")
        shutil.rmtree(work, ignore_errors=True)
    plot_scale(points, ROOT / "bench" / "scale.png", shape)
    return points


def plot_scale(points: dict, target: Path, shape: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: .venv/bin/python -m pip install -r bench/requirements.txt "
              "(or make bench-deps); no plot", flush=True)
        return
    sizes = sorted(points)
    mib = [points[s]["database_bytes"] / 2**20 for s in sizes]
    series = {
        "backup: pg_backup default": ("backup", "pg_backup default"),
        "backup: runbook pg_dump | gzip": ("backup", "runbook: pg_dump | gzip"),
        "backup: floor pg_dump -f": ("backup", "floor: pg_dump -f (plain, uncompressed)"),
        "restore: pg_restore default": ("restore", "pg_restore default (binary)"),
        "restore: runbook gunzip -c | psql": ("restore", "runbook: gunzip -c | psql"),
    }
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (section, way) in series.items():
        seconds = [points[s][section][way]["seconds"] for s in sizes]
        ax.errorbar(mib, [x["median"] for x in seconds],
                    yerr=[[x["median"] - x["min"] for x in seconds], [x["max"] - x["median"] for x in seconds]],
                    marker="o", capsize=3, label=label, linestyle="--" if "runbook" in label or "floor" in label
                    else "-")
    ax.set_xlabel("database size on disk (MiB)")
    ax.set_ylabel("seconds (median, min-max)")
    ax.set_title(f"Backup and restore time by size ({shape} shape)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"plot: {target}", flush=True)


# --- orchestration overhead and live traffic (unchanged) ------------------------------------------


def bench_migrate_overhead(admin_url: str, out: Path) -> None:
    name = "bench_migrate"
    url = with_database(admin_url, name)
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(admin_url, f'CREATE DATABASE "{name}"')
    extra = {"rm_backup_dir": str(out / "migrate-backups"), "rm_reports_root": str(out / "reports")}
    rows = {}
    for run in ("first (migrates)", "second (up to date)"):
        started = time.perf_counter()
        proc = run_playbook("playbooks/migrate.yml", extra_vars=extra, env={"DATABASE_URL": url})
        wall = time.perf_counter() - started
        assert proc.rc == 0, proc.output[-3000:]
        report = json.loads(sorted((out / "reports").glob("*/*/*/report.json"))[-1].read_text())
        db_work = float(report.get("database_work_s") or 0)
        tasks = proc.output.count("\nTASK [")
        rows[run] = {"wall_s": round(wall, 2), "database_work_s": round(db_work, 2),
                     "overhead_s": round(wall - db_work, 2), "tasks": tasks}
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    RESULTS["migrate"] = rows


def _worst_latency_ms(log_dir: Path) -> float:
    worst = 0.0
    for log in log_dir.glob("pgbench_log*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                worst = max(worst, int(parts[2]) / 1000.0)  # microseconds → ms
    return worst


def _stall_run(admin_url: str, bin_dir: str, work: Path, migrate) -> float:
    """pgbench on a table, an 8 s transaction holding a lock on it, and `migrate` queued behind it."""
    from ansible.module_utils.pg_connection import ConnInfo  # type: ignore

    name = "bench_stall"
    url = with_database(admin_url, name)
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(admin_url, f'CREATE DATABASE "{name}"')
    execute(url, "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL DEFAULT 0);"
                 "INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 10000) i;")
    script = work / "workload.sql"
    script.write_text("\\set id random(1, 10000)\nSELECT balance FROM accounts WHERE id = :id;\n")
    logs = work / f"logs-{time.monotonic_ns()}"
    logs.mkdir()
    bench = subprocess.Popen(
        [f"{bin_dir}/pgbench", "-n", "-c", "4", "-T", "14", "-R", "200", "-l", "-f", str(script),
         ConnInfo.parse(url).libpq_url],
        cwd=logs, env=ConnInfo.parse(url).libpq_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    blocker = psycopg2.connect(url)
    with blocker.cursor() as cur:
        cur.execute("BEGIN; SELECT count(*) FROM accounts")  # ACCESS SHARE held for 8 s
    releaser = threading.Timer(8.0, lambda: (blocker.rollback(), blocker.close()))
    releaser.start()
    time.sleep(0.3)
    migrate(url)
    releaser.join()
    bench.wait()
    worst = _worst_latency_ms(logs)
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return worst


def bench_stall(admin_url: str, bin_dir: str, out: Path) -> None:
    work = out / "stall"
    work.mkdir(exist_ok=True)
    project = work / "project"
    (project / "versions").mkdir(parents=True, exist_ok=True)
    (work / "alembic.ini").write_text(f"[alembic]\nscript_location = {project}\n")
    (project / "env.py").write_text(
        "from alembic import context\nfrom sqlalchemy import create_engine\n"
        "conn = context.config.attributes.get('connection')\n"
        "if conn is None:\n"
        "    conn = create_engine(context.config.get_main_option('sqlalchemy.url')).connect()\n"
        "context.configure(connection=conn, transaction_per_migration=True)\n"
        "with context.begin_transaction():\n    context.run_migrations()\n")
    (project / "script.py.mako").write_text("")
    (project / "versions" / "a1_add_note.py").write_text(
        '"""Add a column: needs ACCESS EXCLUSIVE on accounts for an instant."""\n'
        "from alembic import op\nimport sqlalchemy as sa\n"
        "revision = 'a1a1a1a1a1a1'\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n\n"
        "def upgrade():\n    op.add_column('accounts', sa.Column('note', sa.Text()))\n\n"
        "def downgrade():\n    op.drop_column('accounts', 'note')\n")
    from ansible.module_utils.pg_connection import ConnInfo  # type: ignore

    def bare_alter(url: str) -> None:
        subprocess.run([f"{bin_dir}/psql", "-X", "-q", "-c", "ALTER TABLE accounts ADD COLUMN note text",
                        ConnInfo.parse(url).libpq_url], env=ConnInfo.parse(url).libpq_env(), check=True)

    def module_apply(url: str) -> None:
        result = run_module("alembic_migrate", {"config": str(work / "alembic.ini"), "url": url, "revision": "head",
                                                "lock_timeout": "200ms", "lock_retries": 40,
                                                "lock_retry_delay": 0.5})
        assert result.rc == 0, result.output[-2000:]
        RESULTS.setdefault("stall_detail", {})["lock_retries_used"] = result.result.get("lock_retries_used")

    rows = {"bare ALTER TABLE (runbook)": {"worst_stall_ms": round(_stall_run(admin_url, bin_dir, work, bare_alter))},
            "alembic_migrate lock_timeout=200ms + retries": {
                "worst_stall_ms": round(_stall_run(admin_url, bin_dir, work, module_apply))}}
    rows["alembic_migrate lock_timeout=200ms + retries"]["target_ms"] = 250
    RESULTS["stall"] = rows


# --- report ----------------------------------------------------------------------------------------


def _cell(label: str) -> str:
    return label.replace("|", "\\|")


def _fmt(spread: dict, unit: str = "×") -> str:
    return f"{spread['median']:.2f}{unit} ({spread['min']:.2f}–{spread['max']:.2f})"


def markdown() -> str:
    lines = [f"Server {RESULTS.get('server_version')}, client tools {RESULTS.get('client_version')}; "
             f"{RESULTS.get('machine')}; {RESULTS.get('runs')} alternated runs; "
             f"command: `{RESULTS.get('command')}`.", ""]
    for name, db in RESULTS.get("databases", {}).items():
        lines.append(f"- {name}: {db['size_bytes'] / 2**20:.0f} MiB, largest table {db['largest_table_share']:.0%}")
    lines.append("")
    for shape, sections in RESULTS.get("shapes", {}).items():
        if "backup" in sections:
            lines += [f"### Backup, {shape}", "",
                      "| Way | seconds | vs floor (time) | speed-up vs runbook | MiB | size vs runbook |",
                      "|---|---|---|---|---|---|"]
            for label, r in sections["backup"].items():
                lines.append(f"| {_cell(label)} | {_fmt(r['seconds'], ' s')} | {_fmt(r['ratio'])} | "
                             f"{_fmt(r['speedup_vs_runbook'])} | {r['bytes'] / 2**20:.0f} | {r['size_vs_runbook']}× |")
            lines.append("")
        if "restore" in sections:
            lines += [f"### Restore, {shape}", "", "| Way | seconds | speed-up vs runbook |", "|---|---|---|"]
            for label, r in sections["restore"].items():
                lines.append(f"| {_cell(label)} | {_fmt(r['seconds'], ' s')} | {_fmt(r['speedup'])} |")
            lines.append("")
        if "drill" in sections:
            lines += [f"### Drill restore, {shape}", "", "| Way | seconds | time vs the bare tool |", "|---|---|---|"]
            for label, r in sections["drill"].items():
                lines.append(f"| {_cell(label)} | {_fmt(r['seconds'], ' s')} | {_fmt(r['ratio'])} |")
            lines.append("")
    lines += _recovery_lines() + _scale_lines() + _other_lines()
    return "\n".join(lines)


def _recovery_lines() -> list[str]:
    rec = RESULTS.get("recovery")
    if not rec:
        return []
    lines = ["### Recovery of a failed migration", "", "| Way | recovery s (median, min–max) |", "|---|---|"]
    for way, spread in rec["recovery_s"].items():
        lines.append(f"| {way.replace('_', ' ')} | {_fmt(spread, ' s')} |")
    return [*lines, ""]


def _scale_lines() -> list[str]:
    scale = RESULTS.get("scale")
    if not scale:
        return []
    lines = ["### Scale", "",
             "| MiB | backup s | backup vs floor | backup vs runbook | restore s | restore vs runbook |",
             "|---|---|---|---|---|---|"]
    for p in scale["points"].values():
        b, r = p["backup"]["pg_backup default"], p["restore"]["pg_restore default (binary)"]
        lines.append(f"| {p['database_bytes'] / 2**20:.0f} | {_fmt(b['seconds'], ' s')} | {_fmt(b['ratio'])} | "
                     f"{_fmt(b['speedup_vs_runbook'])} | {_fmt(r['seconds'], ' s')} | {_fmt(r['speedup'])} |")
    return [*lines, ""]


def _other_lines() -> list[str]:
    lines = []
    if "migrate" in RESULTS:
        lines += ["| migrate.yml | wall s | database work s | overhead s | tasks |", "|---|---|---|---|---|"]
        for label, r in RESULTS["migrate"].items():
            lines.append(f"| {label} | {r['wall_s']} | {r['database_work_s']} | {r['overhead_s']} | {r['tasks']} |")
        lines.append("")
    if "stall" in RESULTS:
        lines += ["| ALTER TABLE behind an 8 s transaction, under pgbench | worst query stall ms |", "|---|---|"]
        for label, r in RESULTS["stall"].items():
            lines.append(f"| {label} | {r['worst_stall_ms']} |")
        lines.append("")
    return lines


# --- main ------------------------------------------------------------------------------------------


def bench_shape(shape: str, admin_url: str, bin_dir: str, out: Path, args, only: set[str]) -> dict:
    url = build(admin_url, shape, args.size_mb)
    work = out / shape
    work.mkdir()
    sections: dict = {}
    formats = list(BACKUP_FORMATS) if args.all_formats else ["pg_backup default", "pg_backup plain"]
    print(f"== {shape}: backup", flush=True)
    backup = bench_backup(url, args.bin_dir or bin_dir, work, args.runs, formats)
    sections["backup"] = backup["rows"]
    if "restore" in only:
        print(f"== {shape}: restore", flush=True)
        sections["restore"] = bench_restore(url, admin_url, bin_dir, backup["files"], args.runs)
    if "drill" in only:
        print(f"== {shape}: drill", flush=True)
        sections["drill"] = bench_drill(url, admin_url, bin_dir, backup["files"], args.runs)
    if "recovery" in only and shape == "deployments":
        print("== recovery of a failed migration", flush=True)
        RESULTS["recovery"] = bench_recovery(url, bin_dir, work, max(1, args.runs // 2 + 1))
    if not args.keep:
        drop(admin_url, f"bench_{shape}_{args.size_mb}")
        shutil.rmtree(work, ignore_errors=True)
    return sections


def _describe(bin_dir: str, admin_url: str, argv: list[str]) -> None:
    version = subprocess.run([f"{bin_dir}/pg_dump", "--version"], capture_output=True, text=True).stdout.split()
    RESULTS["server_version"] = query(admin_url, "SHOW server_version")[0][0]
    RESULTS["client_version"] = version[-1] if version else None
    RESULTS["machine"] = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    RESULTS["command"] = "bench/run_benchmarks.py " + " ".join(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1000, help="approximate database size (default 1000)")
    parser.add_argument("--shapes", default="deployments,jsonb", help="comma-separated: deployments, jsonb")
    parser.add_argument("--runs", type=int, default=5, help="alternated runs of every comparison (default 5)")
    parser.add_argument("--only", default="backup,restore,drill,recovery,scale,migrate,stall",
                        help="comma-separated subset")
    parser.add_argument("--all-formats", action="store_true", default=True, help="every backup format (default)")
    parser.add_argument("--default-only", dest="all_formats", action="store_false",
                        help="only pg_backup's default format")
    parser.add_argument("--scale-sizes", default="100,500,1000", help="sizes in MB for the scale section")
    parser.add_argument("--scale-runs", type=int, default=3, help="alternated runs per scale point (default 3)")
    parser.add_argument("--bin-dir", default="", help="client tools for the backup (default: the server's)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and databases")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results.json"), help="where the JSON goes")
    args = parser.parse_args()
    only = set(args.only.split(","))
    info = embedded_postgres.start()
    admin_url, bin_dir = info["admin_url"], info["bin_dir"]
    _describe(bin_dir, admin_url, sys.argv[1:])
    RESULTS["runs"] = args.runs
    out = Path(tempfile.mkdtemp(prefix="rm-bench-", dir=ROOT / ".state"))
    out.chmod(0o755)
    try:
        if only & {"backup", "restore", "drill", "recovery"}:
            for shape in args.shapes.split(","):
                RESULTS.setdefault("shapes", {})[shape] = bench_shape(shape, admin_url, bin_dir, out, args, only)
        if "scale" in only:
            sizes = [int(s) for s in args.scale_sizes.split(",")]
            RESULTS["scale"] = {"shape": "deployments", "runs": args.scale_runs, "points": bench_scale(
                admin_url, bin_dir, out, sizes, args.scale_runs, "deployments")}
        if "migrate" in only:
            bench_migrate_overhead(admin_url, out)
        if "stall" in only:
            bench_stall(admin_url, bin_dir, out)
    finally:
        Path(args.results).write_text(json.dumps(RESULTS, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
