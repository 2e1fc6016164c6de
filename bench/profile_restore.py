#!/usr/bin/env python3
"""Where a restore's time goes: pg_restore's default (the parallel load) of a ~1 GB backup, profiled.

    .venv/bin/python bench/profile_restore.py --shape deployments --size-mb 1000 --runs 2

Builds the shape (as bench/run_benchmarks.py does), takes pg_backup's default backup, then per run (the target
dropped, a CHECKPOINT first, untimed):

  decode   the backup read, gunzipped (ISA-L) and cut into COPY chunks by plain_dump.split_plain, nothing sent:
           the Python side's floor (wall and CPU seconds of this process)
  restore  pg_restore (in this process, as the benchmarks call it): wall seconds, the module's own step timings
           and load phases, and CPU seconds by whom: this process (decode, cut, libpq; all threads), its psql
           children, the server sessions of the target database, the server's background processes (WAL writer,
           checkpointer, background writer; shared with anything else the server does meanwhile)

Server CPU is sampled from /proc every 0.1 s (a session that ends between two samples loses at most 0.1 s).
Results: bench/profile_results.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run_benchmarks as rb  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
BACKGROUND = ("checkpointer", "background writer", "walwriter")


def _proc_cpu() -> dict[int, tuple[str, float]]:
    """Every postgres process: (its title, CPU seconds so far)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            if not title.startswith("postgres:"):
                continue
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            out[int(entry.name)] = (title, (int(fields[11]) + int(fields[12])) / TICK)
        except (OSError, ValueError, IndexError):  # gone, or a zombie: its CPU was counted when last seen
            continue
    return out


class ServerCpu:
    """CPU seconds the server spends for one database's sessions, and in its background processes."""

    def __init__(self, dbname: str) -> None:
        self.dbname = f" {dbname}"
        self.start = {pid: cpu for pid, (_, cpu) in _proc_cpu().items()}
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.samples = 0
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.is_set():
            try:
                self.last.update(_proc_cpu())
                self.samples += 1
            except Exception as exc:  # noqa: BLE001 - keep sampling; say it once the run is over
                self.errors.append(repr(exc))
            self.stop.wait(0.1)

    def finish(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        self.last.update(_proc_cpu())
        sessions = background = 0.0
        # The restore loads into "<name>_rm_loading_<id>" and renames it at the end; parallel workers of its
        # index builds count as its sessions.
        ours = {str(pid) for pid, (title, _) in self.last.items() if self.dbname in title}
        for pid, (title, cpu) in self.last.items():
            used = cpu - self.start.get(pid, 0.0)
            if str(pid) in ours or title.split("parallel worker for PID ")[-1].strip() in ours:
                sessions += used
            elif any(name in title for name in BACKGROUND):
                background += used
        return {"server_sessions_cpu_s": round(sessions, 2), "server_background_cpu_s": round(background, 2),
                "cpu_samples": self.samples, "sampling_errors": self.errors[:3]}


def _cpu_self() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def decode_only(path: Path) -> dict[str, float]:
    from ansible.module_utils.fast_gzip import open_read  # type: ignore
    from ansible.module_utils.plain_dump import CopyChunk, split_plain  # type: ignore

    cpu0, started = _cpu_self()[0], time.perf_counter()
    rows = 0
    with open_read(path, "rb") as source:
        for piece in split_plain(source):
            rows += piece.size if isinstance(piece, CopyChunk) else 0
    return {"decode_wall_s": round(time.perf_counter() - started, 2), "decode_cpu_s": round(_cpu_self()[0] - cpu0, 2),
            "copy_bytes": rows}


def restore_once(admin_url: str, target: str, backup: Path, source_db: str, bin_dir: str) -> dict:
    rb.drop(admin_url, "bench_profile")
    rb.settle(admin_url)
    cpu0, kids0 = _cpu_self()
    server = ServerCpu("bench_profile")
    started = time.perf_counter()
    result = rb.module("pg_restore", {"url": target, "src": str(backup), "jobs": 2, "source_database": source_db,
                                      "pg_bin_dir": bin_dir})
    wall = time.perf_counter() - started
    cpu1, kids1 = _cpu_self()
    return {"wall_s": round(wall, 2), **server.finish(), "module_python_cpu_s": round(cpu1 - cpu0, 2),
            "psql_children_cpu_s": round(kids1 - kids0, 2), "timings": result["timings"],
            "phases_s": result["load"].get("phases_s"), "method": result["load"]["method"],
            "load_average_1min": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="deployments", choices=sorted(rb.SHAPES))
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--results", default=str(BENCH / "profile_results.json"))
    args = parser.parse_args()
    info = rb.embedded_postgres.start()
    admin_url, bin_dir = info["admin_url"], info["bin_dir"]
    url = rb.build(admin_url, args.shape, args.size_mb)
    work = Path(rb.tempfile.mkdtemp(prefix="rm-profile-", dir=rb.ROOT / ".state"))
    work.chmod(0o755)
    backup = Path(rb.module("pg_backup", {"url": url, "dest": str(work), "pg_bin_dir": bin_dir})["path"])
    backup_bytes = backup.stat().st_size
    target = rb.with_database(admin_url, "bench_profile")
    runs = []
    for run in range(args.runs):
        decode = decode_only(backup)
        runs.append({**decode, **restore_once(admin_url, target, backup, rb.dbname_of(url), bin_dir)})
        print(f"run {run + 1}: {json.dumps(runs[-1])}", flush=True)
    rb.drop(admin_url, "bench_profile")
    rb.drop(admin_url, f"bench_{args.shape}_{args.size_mb}")
    rb.shutil.rmtree(work, ignore_errors=True)
    result = {"command": "bench/profile_restore.py " + " ".join(sys.argv[1:]), "shape": args.shape,
              "database": rb.RESULTS["databases"], "backup_bytes": backup_bytes,
              "runs": runs, "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]
                                       if isinstance(runs[0][k], float | int)}}
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
