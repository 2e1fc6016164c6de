#!/usr/bin/env python3
"""The restore's index and constraint builds, one by one, and one way of running them that was considered.

    .venv/bin/python bench/post_data_benchmark.py --shape jsonb --size-mb 1000 --runs 3

Builds the shape (as bench/run_benchmarks.py does), drops its indexes and constraints, then:

  steps     each post-data statement pg_dump writes for it (primary keys, unique constraints, indexes,
            foreign keys), run alone on one session, in dump order, timed (the work the parallel load's
            builds phase shares out over its sessions)
  pk_first  the biggest table's primary key, then its other index (what the load does: the ALTER TABLE that
            adds a primary key locks the table, so the index build waits for it), vs the primary key built
            as CREATE UNIQUE INDEX beside the other index on two sessions, then attached with
            ALTER TABLE ... ADD CONSTRAINT ... PRIMARY KEY USING INDEX; alternated, --runs times

Results: bench/post_data_results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run_benchmarks as rb  # noqa: E402

BIG = {"jsonb": ("events", "events_pkey", "id", "events_account_created", "(account_id, created_at)"),
       "deployments": ("deployments", "deployments_pkey", "id", "ix_deployments_created_at", "(created_at)")}


def post_data(url: str, bin_dir: str) -> list[str]:
    libpq, env = rb.conn_env(url)
    text = subprocess.run([f"{bin_dir}/pg_dump", "--section=post-data", libpq], env={**rb.os.environ, **env},
                          capture_output=True, text=True, check=True).stdout
    statements = []
    for piece in text.split(";\n"):
        sql = "\n".join(line for line in piece.split("\n") if line.strip() and not line.startswith("--")).strip()
        if sql.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX")) or "ADD CONSTRAINT" in sql:
            statements.append(sql + ";")
    return statements


def _undo(sql: str) -> str:
    if sql.startswith("ALTER TABLE"):
        table, name = sql.split("ALTER TABLE ONLY ")[1].split()[0], sql.split("ADD CONSTRAINT ")[1].split()[0]
        return f"ALTER TABLE {table} DROP CONSTRAINT {name}"
    return f"DROP INDEX public.{sql.split('INDEX ')[1].split()[0]}"


def timed(url: str, sql: str) -> float:
    conn = rb.psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        started = time.perf_counter()
        cur.execute(sql)
        seconds = time.perf_counter() - started
    conn.close()
    return seconds


def bench_steps(url: str, statements: list[str]) -> list[dict]:
    for sql in reversed(statements):
        rb.execute(url, _undo(sql))
    rb.settle(url)
    return [{"statement": " ".join(sql.split())[:160], "seconds": round(timed(url, sql), 3)} for sql in statements]


def bench_pk_first(url: str, shape: str, runs: int) -> dict:
    table, pkey, column, index, columns = BIG[shape]
    reset = (f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {pkey}; DROP INDEX IF EXISTS {index}; "
             f"DROP INDEX IF EXISTS {pkey}")
    build_index = f"CREATE INDEX {index} ON public.{table} USING btree {columns}"
    times: dict[str, list[float]] = {"primary key, then the index": [], "unique index beside the index, attach": []}
    for _ in range(runs):
        rb.execute(url, reset)
        rb.settle(url)
        started = time.perf_counter()
        timed(url, f"ALTER TABLE ONLY public.{table} ADD CONSTRAINT {pkey} PRIMARY KEY ({column})")
        timed(url, build_index)
        times["primary key, then the index"].append(time.perf_counter() - started)
        rb.execute(url, reset)
        rb.settle(url)
        started = time.perf_counter()
        side = [threading.Thread(target=timed, args=(url, sql)) for sql in (
            f"CREATE UNIQUE INDEX {pkey} ON public.{table} USING btree ({column})", build_index)]
        for thread in side:
            thread.start()
        for thread in side:
            thread.join()
        timed(url, f"ALTER TABLE ONLY public.{table} ADD CONSTRAINT {pkey} PRIMARY KEY USING INDEX {pkey}")
        times["unique index beside the index, attach"].append(time.perf_counter() - started)
    return {"table": table, **rb.summarize(times, "primary key, then the index")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="jsonb", choices=sorted(BIG))
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", default=str(BENCH / "post_data_results.json"))
    args = parser.parse_args()
    info = rb.embedded_postgres.start()
    admin_url, bin_dir = info["admin_url"], info["bin_dir"]
    rb._describe(bin_dir, admin_url, sys.argv[1:])
    rb.RESULTS["command"] = "bench/post_data_benchmark.py " + " ".join(sys.argv[1:])
    url = rb.build(admin_url, args.shape, args.size_mb)
    try:
        statements = post_data(url, bin_dir)
        steps = bench_steps(url, statements)
        for step in steps:
            print(f"{step['seconds']:7.3f}  {step['statement'][:110]}", flush=True)
        pk_first = bench_pk_first(url, args.shape, args.runs)
        print(json.dumps(pk_first, indent=2), flush=True)
    finally:
        rb.drop(admin_url, f"bench_{args.shape}_{args.size_mb}")
    result = {**{k: rb.RESULTS[k] for k in ("server_version", "client_version", "machine", "command", "databases")},
              "shape": args.shape, "runs": args.runs, "steps": steps,
              "steps_total_s": round(sum(s["seconds"] for s in steps), 3), "pk_first": pk_first}
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
