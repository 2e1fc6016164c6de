#!/usr/bin/env python3
"""Fleet time: migrate.yml over 1, 5 and 20 databases (one inventory host each) with forks 1 and 5.

    .venv/bin/python bench/fleet_benchmark.py                      # the machine's PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/fleet_benchmark.py --server postgresql://postgres@127.0.0.1:5432/postgres \\
        --sizes 1,5,20 --forks 1,5 --runs 2 --waves '[1, "100%"]'

Every database is a copy (CREATE DATABASE ... TEMPLATE) of one small release_manager database two revisions
below head with --users sample rows, so each run starts from the same state. Each case runs the real
ansible-playbook on an inventory of that many hosts (inventories/fleet-example's group_vars, each host its own
rm_database_url) with the waves given (default: the canary, then all the others in one wave, so forks decide
how many databases of that wave run at once). The cases alternate within one run (sizes x forks, then again
for --runs); each case reports the wall time, the fleet's own elapsed time and each wave's time from its
summary.json, and every database's revision read back with SQL afterwards. The databases (fleetbench_*) are
dropped at the end.

Results: bench/fleet_results.json, and a Markdown section for BENCHMARKS.md (--markdown, default
/tmp/fleet_bench.md).
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from seed_demo_data import seed  # noqa: E402
from support import ansible_env, fleet_inventory, revision_of, sql, with_database  # noqa: E402

START_REVISION = "5e4a7c9d1f65"  # two revisions below head: each run applies 8f1a2b3c4d5e and 9c2b3f1a4e5d
HEAD = "9c2b3f1a4e5d"
PREFIX = "fleetbench"


def make_template(server: str, users: int) -> str:
    from ansible.module_utils.alembic_runner import MigrationRequest, run

    name = f"{PREFIX}_template"
    sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    sql(server, f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), revision=START_REVISION))
    seed(url, users)
    return name


def fresh_databases(server: str, template: str, count: int) -> list[str]:
    """``count`` copies of the template, dropped first if a previous case left them."""
    urls = []
    for index in range(count):
        name = f"{PREFIX}_{index + 1:02d}"
        sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        sql(server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        urls.append(with_database(server, name))
    return urls


def run_case(server: str, template: str, count: int, forks: int, waves: list) -> dict:
    """One fleet run: wall time, the summary's elapsed and wave times, every database's revision by SQL."""
    urls = fresh_databases(server, template, count)
    work = Path(tempfile.mkdtemp(prefix="fleetbench-"))
    work.chmod(0o755)
    try:
        inv = fleet_inventory(work / "inventory", urls)
        extra = {"rm_waves": waves, "rm_max_fail_percentage": 0, "rm_reports_root": str(work / "reports"),
                 "rm_backup_dir": str(work / "backups")}
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/migrate.yml", "-i", str(inv),
               "-f", str(forks), "-e", json.dumps(extra)]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        revisions = [revision_of(url) for url in urls]
        (summary_file,) = (work / "reports" / "fleet-example").glob("fleet-*/summary.json")
        summary = json.loads(summary_file.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "databases": count, "forks": forks, "rc": proc.returncode, "wall_s": round(wall, 2),
        "fleet_elapsed_s": summary["elapsed_s"], "status": summary["status"], "counts": summary["counts"],
        "waves": [{"wave": w["wave"], "size": w["size"], "duration_s": w["duration_s"]} for w in summary["waves"]],
        "at_head_by_sql": sum(1 for r in revisions if r == [HEAD]),
        "per_database_s": round(wall / count, 2),
        "load_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "tail": "" if proc.returncode == 0 else proc.stdout[-2000:],
    }


def aggregate(cases: list[dict], sizes: list[int], forks: list[int]) -> list[dict]:
    """Median wall time per (databases, forks), and the speed-up of each forks value over the first one."""
    rows = []
    for count in sizes:
        base = None
        for fork in forks:
            runs = [c for c in cases if c["databases"] == count and c["forks"] == fork]
            walls = [c["wall_s"] for c in runs]
            median = round(statistics.median(walls), 2)
            base = base or median
            rest = [sum(w["duration_s"] or 0 for w in c["waves"][1:]) for c in runs if c["waves"][1:]]
            rows.append({"databases": count, "forks": fork, "wall_s": median, "min_s": min(walls), "max_s": max(walls),
                         "per_database_s": round(median / count, 2), "speedup_vs_first_forks": round(base / median, 2),
                         "canary_wave_s": round(statistics.median(c["waves"][0]["duration_s"] for c in runs), 1),
                         "rest_s": round(statistics.median(rest), 1) if rest else None,
                         "load_1min": round(statistics.median(sum(c["load_1min_before_after"]) / 2 for c in runs), 1)})
    return rows


def markdown(result: dict) -> str:
    meta = result["machine"]
    lines = [
        "## Fleets in waves: time for 1, 5 and 20 databases",
        "",
        f"`bench/fleet_benchmark.py`: {result['runs']} alternated run(s) of every case in one invocation (median, "
        f"min-max), after an untimed warm-up, on {meta['cpus']} CPU(s), PostgreSQL {meta['server_version']} "
        f"({meta['server']}); each database a copy of a small release_manager database ({result['users']} users) "
        f"two revisions below head, migrated by `playbooks/migrate.yml` with `rm_waves={json.dumps(result['waves'])}` "
        "(the canary, then the rest in one wave) and the fleet-example inventory's settings (preview with the "
        "scratch reference and the lint, verified backup, apply, verify, report per database, the fleet summary). "
        "Wall time of `ansible-playbook` (canary and other waves: their times in the fleet summary, medians); "
        "every database read back at head with SQL afterwards. Load: the machine's 1-minute load average around "
        "each case (other work shares the runner; above its CPU count the times are stretched).",
        "",
        "| Databases | Forks | Fleet time (s) | Per database (s) | Canary wave (s) | Other waves (s) "
        "| Speed-up vs forks 1 | Load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        spread = f" ({r['min_s']}-{r['max_s']})" if r["min_s"] != r["max_s"] else ""
        lines.append(f"| {r['databases']} | {r['forks']} | {r['wall_s']}{spread} | {r['per_database_s']} | "
                     f"{r['canary_wave_s']} | {r['rest_s'] if r['rest_s'] is not None else '—'} | "
                     f"{r['speedup_vs_first_forks']}x | {r['load_1min']} |")
    lines += ["", "Reading it: the canary wave costs one database's run whatever the fleet; after it, forks decide "
              "how many databases of a wave run at once. Each database's run is mostly Python start-up and module "
              "work on the runner (CPU), so with 5 forks the speed-up is bounded by the runner's cores, not by "
              "PostgreSQL. Beyond one runner, AWX job slicing (docs/awx.md) splits the fleet across execution nodes.",
              ""]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("FLEET_BENCH_SERVER",
                                                           "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--forks", default="1,5")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--waves", default='[1, "100%"]')
    parser.add_argument("--out", default=str(ROOT / "bench" / "fleet_results.json"))
    parser.add_argument("--markdown", default="/tmp/fleet_bench.md")  # noqa: S108 (a section to paste, nothing secret)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    forks = [int(f) for f in args.forks.split(",")]
    waves = json.loads(args.waves)
    server = with_database(args.server, "postgres")
    template = make_template(server, args.users)
    cases = []
    try:
        run_case(server, template, 1, forks[0], waves)  # warm-up, not counted (first imports, squawk, caches)
        for run in range(args.runs):
            for count in sizes:
                for fork in forks:
                    case = run_case(server, template, count, fork, waves)
                    cases.append({**case, "run": run + 1})
                    print(json.dumps({k: case[k] for k in ("databases", "forks", "rc", "wall_s", "fleet_elapsed_s",
                                                           "at_head_by_sql")}), flush=True)
    finally:
        for name in [row[0] for row in sql(server, "SELECT datname FROM pg_database WHERE datname LIKE %s",
                                           (f"{PREFIX}_%",))]:
            sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "server": server.split("@")[-1], "server_version": sql(server, "SHOW server_version")[0][0]},
        "users": args.users, "waves": waves, "runs": args.runs, "start_revision": START_REVISION, "head": HEAD,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": cases, "summary": aggregate(cases, sizes, forks),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(args.markdown).write_text(markdown(result))
    print(markdown(result))
    return 0 if all(c["rc"] == 0 and c["at_head_by_sql"] == c["databases"] for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
