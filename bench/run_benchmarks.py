#!/usr/bin/env python3
"""Benchmarks behind the figures in BENCHMARKS.md, measured as ratios within one run.

    make bench                                  # ~1 GB database on the embedded server
    .venv/bin/python bench/run_benchmarks.py --size-mb 200 --only backup,restore

What it measures (each against the runbook's way, on the same database, in the same run):
  backup    the runbook's `pg_dump | gzip > file` vs pg_backup's default and its directory format
            (checksum, manifest and verification included: the module's own duration_s)
  restore   the runbook's `gunzip -c file | psql` vs pg_restore (parallel jobs, load settings)
  migrate   migrate.yml's own overhead: wall time minus the database work its modules report
  stall     the worst query stall under pgbench while a migration waits behind an 8 s transaction:
            a bare `ALTER TABLE` vs alembic_migrate with lock_timeout and retries
Results go to bench/results.json and are printed as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import embedded_postgres  # noqa: E402
import psycopg2  # noqa: E402
from support import run_module, run_playbook, with_database  # noqa: E402

RESULTS: dict = {}


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


def settle(url: str) -> None:
    """Start every timed step from the same state: no dirty buffers or WAL left by the step before."""
    execute(url, "CHECKPOINT")


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def build_database(admin_url: str, name: str, size_mb: int) -> str:
    """release_manager's chain at head, filled with about size_mb of rows that compress like real data."""
    url = with_database(admin_url, name)
    execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    execute(admin_url, f'CREATE DATABASE "{name}"')
    result = run_module("alembic_migrate", {"config": str(ROOT / "alembic.ini"), "url": url, "revision": "head"})
    assert result.rc == 0, result.output[-2000:]
    # ~1 KB per deployment row; releases and users scale with it.
    deployments = size_mb * 1000
    releases = max(1000, deployments // 20)
    users = max(1000, deployments // 50)
    started = time.perf_counter()
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
    execute(url, "VACUUM ANALYZE")
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        db_bytes = cur.fetchone()[0]
    conn.close()
    RESULTS["database"] = {"name": name, "size_bytes": db_bytes, "build_s": round(time.perf_counter() - started, 1)}
    print(f"built {name}: {db_bytes / 2**20:.0f} MiB", flush=True)
    return url


def bench_backup(url: str, bin_dir: str, out: Path) -> dict:
    from ansible.module_utils.pg_connection import ConnInfo  # type: ignore

    env = ConnInfo.parse(url).libpq_env()
    runbook_file = out / "runbook.sql.gz"
    settle(url)
    runbook_s = sh(f"'{bin_dir}/pg_dump' '{ConnInfo.parse(url).libpq_url}' | gzip > '{runbook_file}'", env)
    runbook_bytes = size_of(runbook_file)
    rows = {"runbook pg_dump | gzip": {"seconds": runbook_s, "bytes": runbook_bytes}}
    for label, args in {
        "pg_backup default (plain, gzip:1 by ISA-L)": {},
        "pg_backup directory -j 2, gzip:1 by ISA-L": {"format": "directory", "jobs": 2},
        "pg_backup directory -j 1, gzip:1 by ISA-L": {"format": "directory", "jobs": 1},
        "pg_backup custom -Z gzip:1 (pg_dump's zlib)": {"format": "custom", "compression": "gzip:1"},
    }.items():
        dest = out / ("default" if "default" in label else f"{args['format']}{args.get('jobs', '')}")
        settle(url)
        result = run_module("pg_backup", {"url": url, "dest": str(dest), "pg_bin_dir": bin_dir, **args})
        assert result.rc == 0, result.output[-2000:]
        rows[label] = {"seconds": result.result["duration_s"], "bytes": result.result["size_bytes"],
                       "verified": result.result["manifest"]["verified"]}
    for row in rows.values():
        row["speedup"] = round(runbook_s / row["seconds"], 2)
        row["size_ratio"] = round(row["bytes"] / runbook_bytes, 3)
    RESULTS["backup"] = rows
    return {"runbook_file": runbook_file, "backups": out}


def bench_restore(url: str, admin_url: str, bin_dir: str, backup_dir: Path, runbook_file: Path) -> None:
    from ansible.module_utils.pg_connection import ConnInfo  # type: ignore

    target = with_database(admin_url, "bench_restore_runbook")
    execute(admin_url, 'DROP DATABASE IF EXISTS "bench_restore_runbook"')
    execute(admin_url, 'CREATE DATABASE "bench_restore_runbook"')
    settle(admin_url)
    target_url = ConnInfo.parse(target).libpq_url
    runbook_s = sh(f"gunzip -c '{runbook_file}' | '{bin_dir}/psql' -X -q -v ON_ERROR_STOP=1 '{target_url}' "
                   f"> /dev/null", ConnInfo.parse(target).libpq_env())
    rows = {"runbook gunzip -c | psql": {"seconds": runbook_s}}
    variants = {"pg_restore default (plain, psql stream)": "default", "pg_restore directory -j 2": "directory2",
                "pg_restore custom -j 2": "custom"}
    for label, fmt_dir in variants.items():
        name = f"bench_restore_{fmt_dir}"
        execute(admin_url, f'DROP DATABASE IF EXISTS "{name}"')
        settle(admin_url)
        result = run_module("pg_restore", {"url": with_database(admin_url, name), "src": str(backup_dir / fmt_dir),
                                           "source_database": ConnInfo.parse(url).dbname,
                                           "jobs": 2, "pg_bin_dir": bin_dir})
        assert result.rc == 0, result.output[-2000:]
        rows[label] = {"seconds": result.result["duration_s"],
                       "restore_only_s": result.result.get("restore_duration_s")}
        execute(admin_url, f'DROP DATABASE IF EXISTS "{name}"')
    for row in rows.values():
        row["speedup"] = round(runbook_s / row["seconds"], 2)
    execute(admin_url, 'DROP DATABASE IF EXISTS "bench_restore_runbook"')
    RESULTS["restore"] = rows


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


def markdown() -> str:
    lines = []
    db = RESULTS.get("database")
    if db:
        lines.append(f"Database: {db['size_bytes'] / 2**20:.0f} MiB ({db['name']}).\n")
    if "backup" in RESULTS:
        lines += ["| Backup | seconds | size MiB | speed-up vs runbook | size vs runbook |", "|---|---|---|---|---|"]
        for label, r in RESULTS["backup"].items():
            lines.append(f"| {label} | {r['seconds']:.2f} | {r['bytes'] / 2**20:.0f} | {r['speedup']}× | "
                         f"{r['size_ratio']}× |")
        lines.append("")
    if "restore" in RESULTS:
        lines += ["| Restore | seconds | speed-up vs runbook |", "|---|---|---|"]
        for label, r in RESULTS["restore"].items():
            lines.append(f"| {label} | {r['seconds']:.2f} | {r['speedup']}× |")
        lines.append("")
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
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1000, help="approximate database size (default 1000)")
    parser.add_argument("--only", default="backup,restore,migrate,stall", help="comma-separated subset")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    only = set(args.only.split(","))
    info = embedded_postgres.start()
    admin_url, bin_dir = info["admin_url"], info["bin_dir"]
    out = Path(tempfile.mkdtemp(prefix="rm-bench-", dir=ROOT / ".state"))
    out.chmod(0o755)
    try:
        if only & {"backup", "restore"}:
            url = build_database(admin_url, "bench_source", args.size_mb)
            files = bench_backup(url, bin_dir, out)
            if "restore" in only:
                bench_restore(url, admin_url, bin_dir, out, files["runbook_file"])
        if "migrate" in only:
            bench_migrate_overhead(admin_url, out)
        if "stall" in only:
            bench_stall(admin_url, bin_dir, out)
    finally:
        (ROOT / "bench" / "results.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
