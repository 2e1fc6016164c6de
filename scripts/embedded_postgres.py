#!/usr/bin/env python3
"""Start, stop or describe the embedded PostgreSQL server used by `make demo` and `make test`.

The server comes from the PyPI package ``pgserver`` (PostgreSQL 16 with its client tools); its
data lives under ``.state/pg`` (git-ignored) and it keeps running after this script exits, so a
second ``make demo`` reuses it. It listens on a unix socket only, never on the network.

    python scripts/embedded_postgres.py start [--database release_manager]
    python scripts/embedded_postgres.py url
    python scripts/embedded_postgres.py stop
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".state"
DATA_DIR = STATE_DIR / "pg"
INFO_FILE = STATE_DIR / "embedded-postgres.json"


def bin_dir() -> Path:
    import pgserver.postgres_server as ps

    return Path(ps.POSTGRES_BIN_PATH)


def start(database: str = "release_manager", data_dir: Path = DATA_DIR) -> dict:
    """Ensure the server runs and ``database`` exists; return and record its connection facts.

    Safe to call from several processes at once (parallel test workers): one starts, the others wait."""
    import fcntl

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / ".embedded-postgres.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start(database, data_dir)


def _start(database: str, data_dir: Path) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    admin_url = server.get_uri("postgres")
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{database}"')
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0].split()[0]
    conn.close()
    info = {
        "url": server.get_uri(database),
        "admin_url": admin_url,
        "data_dir": str(data_dir),
        "bin_dir": str(bin_dir()),
        "server_version": version,
    }
    if data_dir == DATA_DIR:
        tmp = INFO_FILE.with_name(INFO_FILE.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(INFO_FILE)  # never a half-written file for a reader (the local inventory)
    return info


def stop(data_dir: Path = DATA_DIR) -> None:
    """Stop the server (as the OS user it runs as) if it runs."""
    if not (data_dir / "postmaster.pid").exists():
        print("embedded PostgreSQL is not running")
        return
    cmd = [str(bin_dir() / "pg_ctl"), "-D", str(data_dir), "-w", "stop", "-m", "fast"]
    if os.geteuid() == 0:  # pgserver runs the server as the 'pgserver' user when started as root
        cmd = ["su", "pgserver", "-s", "/bin/sh", "-c", " ".join(cmd)]
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "url"])
    parser.add_argument("--database", default="release_manager")
    args = parser.parse_args(argv)
    if args.action == "start":
        info = start(args.database)
        print(f"embedded PostgreSQL {info['server_version']} ready: {info['url']}")
    elif args.action == "url":
        print(start(args.database)["url"])
    else:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
