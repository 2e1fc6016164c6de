#!/usr/bin/env python3
"""Put sample rows into a release_manager database (whatever revision it is at).

    DATABASE_URL=postgresql://... python scripts/seed_demo_data.py [--users 200]

Fills the tables that exist: users, releases (with JSONB metadata), deployments, user_roles.
Used by `make demo`, the molecule scenarios and the benchmarks, so backups, row counts and
smoke queries have something to show. Running it again adds more rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import psycopg2


def columns(cur, table: str) -> set[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
        (table,),
    )
    return {row[0] for row in cur.fetchall()}


def seed(url: str, users: int) -> dict[str, int]:
    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    added: dict[str, int] = {}
    with conn, conn.cursor() as cur:
        if columns(cur, "users"):
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM users")
            start = cur.fetchone()[0]
            cur.executemany(
                "INSERT INTO users (name, email) VALUES (%s, %s)",
                [(f"User {i}", f"user{i}@example.com") for i in range(start + 1, start + users + 1)],
            )
            added["users"] = users
        release_cols = columns(cur, "releases")
        if release_cols:
            rows = [(f"1.{i}.0", "released" if i % 3 else "draft") for i in range(users // 4 or 1)]
            if "metadata" in release_cols:
                cur.executemany(
                    "INSERT INTO releases (version, status, metadata) VALUES (%s, %s, %s)",
                    [(v, s, json.dumps({"notes": f"release {v}", "risk": i % 3})) for i, (v, s) in enumerate(rows)],
                )
            else:
                cur.executemany("INSERT INTO releases (version, status) VALUES (%s, %s)", rows)
            added["releases"] = len(rows)
        deploy_cols = columns(cur, "deployments")
        if deploy_cols and release_cols:
            status = ", status" if "status" in deploy_cols else ""
            value = ", CASE WHEN g % 2 = 0 THEN 'completed' ELSE 'pending' END" if status else ""
            cur.execute(
                f"INSERT INTO deployments (release_id, completed_at{status}) "
                f"SELECT r.id, CASE WHEN g % 2 = 0 THEN now() END{value} "
                "FROM releases r CROSS JOIN generate_series(1, 2) g"
            )
            added["deployments"] = cur.rowcount
        if columns(cur, "user_roles"):
            cur.execute(
                "INSERT INTO user_roles (user_id, role) "
                "SELECT id, CASE WHEN id % 10 = 0 THEN 'admin' ELSE 'viewer' END "
                "FROM users WHERE id NOT IN (SELECT user_id FROM user_roles)"
            )
            added["user_roles"] = cur.rowcount
    conn.close()
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url or set DATABASE_URL")
    print(json.dumps(seed(args.url, args.users)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
