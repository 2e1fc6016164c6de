#!/usr/bin/python
# MIT License
"""Ansible module: read-only facts about a PostgreSQL database (revision, row counts, schema, monitoring)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_inspect
short_description: Read-only facts about a PostgreSQL database, its schema and its health
description:
  - Reads the Alembic revision, exact row counts, the server version and the database size.
  - Optionally returns a schema snapshot (O(schema)), compares the schema with another database
    (O(compare_with)) or with an earlier snapshot (O(expected_schema)), runs smoke queries
    (O(smoke_queries)) and takes the runbook's monitoring snapshot (O(monitoring)).
  - Never writes. The facts come from one C(REPEATABLE READ READ ONLY)
    transaction (the row counts are one consistent snapshot), and each smoke query runs alone in a
    C(READ ONLY) transaction that is rolled back, with a 30 second C(statement_timeout).
  - Counting rows waits at most 30 seconds for a table lock (for example behind a migration's
    C(ACCESS EXCLUSIVE) lock), then fails with a message naming the table.
  - Always reports RV(ignore:changed=false); check mode behaves exactly like a normal run.
version_added: "1.0.0"
options:
  row_counts:
    description:
      - Count the rows of every user table exactly (a full count per table), excluding the O(version_table).
      - Costs a full scan per table; turn it off for large databases when the counts are not needed.
    type: bool
    default: true
  schema:
    description: Return the schema snapshot in RV(schema), to keep it or to pass it later as O(expected_schema).
    type: bool
    default: false
  monitoring:
    description:
      - Take the runbook's monitoring snapshot in RV(monitoring) - top statements from
        C(pg_stat_statements), table sizes, index usage, unused indexes, connections by state and
        lock waits with the blocking process ids.
    type: bool
    default: false
  smoke_queries:
    description:
      - SQL statements to run, each alone in a C(READ ONLY) transaction that is rolled back.
      - Each must be a single statement. A failing query is reported with C(ok=false) in RV(smoke);
        the module itself does not fail. Use an C(assert) on RV(smoke) to make failures fatal.
    type: list
    elements: str
    default: []
  compare_with:
    description:
      - URL of another database (for example a scratch database migrated to the same revision)
        whose schema is compared with this one. The differences are in RV(schema_diff); this
        database is C(live), the other one C(expected).
    type: str
  expected_schema:
    description:
      - A schema snapshot returned earlier as RV(schema). The differences from the live schema are
        in RV(schema_diff).
    type: dict
  free_space_path:
    description:
      - A directory on this host (the backup directory); its free space is returned as RV(free_space),
        for the pre-backup free-space check. The directory need not exist yet.
    type: path
attributes:
  check_mode:
    support: full
extends_documentation_fragment:
  - connection
  - connection.version_table
notes:
  - The version table is left out of RV(row_counts), RV(tables) and the schema; its rows are RV(revision).
  - The schema snapshot covers non-system schemas - tables (columns with type, nullability, default,
    identity and generation; indexes; constraints), views, sequences and enum types. Objects owned
    by extensions and the version table are left out. Functions, triggers, grants and column order
    are not compared.
  - Row counts and table names are keyed C(table) for the C(public) schema and C(schema.table) otherwise.
  - The read-only transaction is a guard against mistakes, not a sandbox - smoke queries come from
    the inventory and are trusted like the rest of it.
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Snapshot the database before migrating
  pg_inspect:
    url: "{{ rm_database_url }}"
    schema: true
    monitoring: true
  register: before

- name: Smoke queries after migrating
  pg_inspect:
    url: "{{ rm_database_url }}"
    row_counts: false
    smoke_queries:
      - SELECT count(*) FROM users
      - SELECT count(*) FROM releases WHERE status IS NULL
  register: after

- name: Fail when a smoke query failed
  ansible.builtin.assert:
    that: after.smoke | rejectattr('ok') | list | length == 0

- name: Compare with a reference database built from empty at the same revision
  pg_inspect:
    url: "{{ rm_database_url }}"
    row_counts: false
    compare_with: "{{ rm_database_url | pg_with_database('release_manager_reference') }}"
  register: compared

- name: Compare with the snapshot taken earlier
  pg_inspect:
    url: "{{ rm_database_url }}"
    row_counts: false
    expected_schema: "{{ before.schema }}"
  register: round_trip
"""

RETURN = r"""
database:
  description: Name of the database inspected.
  returned: always
  type: str
  sample: release_manager
revision:
  description: Revisions in the version table, sorted; empty when the table does not exist.
  returned: always
  type: list
  elements: str
  sample: ["4f2a9c1d7e10"]
row_counts:
  description: Exact row count per user table (null for a table the role may not read); null when O(row_counts=false).
  returned: always
  type: dict
  sample: {"users": 50, "releases": 120, "audit.events": 0}
tables:
  description: Number of user tables (without the version table).
  returned: always
  type: int
  sample: 4
database_size_bytes:
  description: C(pg_database_size) of the database.
  returned: always
  type: int
  sample: 8123456
server_version:
  description: The server's version.
  returned: always
  type: str
  sample: "16.2"
schema:
  description:
    - Schema snapshot - C(format), C(tables) (name to C(columns), C(indexes), C(constraints)),
      C(views), C(sequences), C(enums). Plain JSON, stable across runs. Null unless O(schema=true).
  returned: always
  type: dict
  sample:
    format: 1
    tables:
      users:
        columns:
          email: {type: "character varying(255)", nullable: false, default: null, identity: null, generated: null}
        indexes: {ix_users_created_at: "CREATE INDEX ix_users_created_at ON public.users USING btree (created_at)"}
        constraints: {users_pkey: {type: PRIMARY KEY, definition: "PRIMARY KEY (id)"}}
    views: {}
    sequences: {}
    enums: {deployment_status: [pending, running, succeeded, failed]}
duration_s:
  description: Seconds spent reading the database (and comparing).
  returned: always
  type: float
  sample: 0.41
free_space:
  description:
    - Free space where O(free_space_path) is (or its nearest existing parent) - C(path), C(free_bytes).
  returned: when O(free_space_path) is set
  type: dict
  sample: {path: /var/backups/release_manager, free_bytes: 52613349376}
schema_diff:
  description:
    - Differences between this database (C(live)) and O(compare_with) or O(expected_schema)
      (C(expected)); empty when they are equal or nothing was compared.
  returned: always
  type: list
  elements: str
  sample:
    - "column users.email_verified: nullable differs (live NOT NULL, expected NULL)"
    - "index ix_releases_status missing (CREATE INDEX ix_releases_status ON public.releases USING btree (status))"
    - "table user_roles only in live"
smoke:
  description: One entry per smoke query, in order.
  returned: always
  type: list
  elements: dict
  contains:
    query:
      description: The query.
      type: str
    ok:
      description: Whether it ran without error.
      type: bool
    result:
      description: First column of the first row (text unless a number, boolean or null).
      type: raw
    rows:
      description: Rows returned or affected.
      type: int
    error:
      description: The server's error, or why the query was not run.
      type: str
    duration_s:
      description: Seconds it took.
      type: float
  sample:
    - {query: "SELECT count(*) FROM users", ok: true, result: 50, rows: 1, error: null, duration_s: 0.002}
monitoring:
  description:
    - The monitoring snapshot; null unless O(monitoring=true). A section that cannot be read
      (privileges, a lock held too long) is null and explained in C(notes).
  returned: always
  type: dict
  contains:
    top_statements:
      description: Top 10 C(pg_stat_statements) entries of this database by mean execution time; null
        (with a note) when the extension is not installed in this database.
      type: list
    table_sizes:
      description: Top 20 tables by total size, with the planner's row estimate.
      type: list
    index_usage:
      description: Every user index with its scan count and size.
      type: list
    unused_indexes:
      description: Non-unique indexes never scanned since the statistics were reset.
      type: list
    connections:
      description: Connections to this database by state (this module's own is one active).
      type: dict
    lock_waits:
      description: Sessions waiting on a lock, with C(blocked_by) (pg_blocking_pids).
      type: list
    database_size_bytes:
      description: Size of the database.
      type: int
    taken_at:
      description: UTC time of the snapshot (ISO 8601).
      type: str
    notes:
      description: Why a section is null.
      type: list
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.db_inspect import inspect_database
from ansible.module_utils.disk_space import free_space
from ansible.module_utils.module_shell import CONNECTION_SPEC, VERSION_TABLE_SPEC, argument_spec, run_request

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC, VERSION_TABLE_SPEC,
    row_counts={"type": "bool", "default": True},
    schema={"type": "bool", "default": False},
    monitoring={"type": "bool", "default": False},
    smoke_queries={"type": "list", "elements": "str", "default": []},
    compare_with={"type": "str", "no_log": True},
    expected_schema={"type": "dict"},
    free_space_path={"type": "path"},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, mutually_exclusive=[("compare_with", "expected_schema")],
                           supports_check_mode=True)
    p = module.params

    def work(conn, other) -> dict:
        started = time.monotonic()
        facts = inspect_database(
            conn, row_counts=p["row_counts"], schema=p["schema"], monitoring=p["monitoring"],
            smoke_queries=p["smoke_queries"], version_table=p["version_table"], compare_with=other,
            expected_schema=p["expected_schema"],
        )
        if p["free_space_path"]:
            facts["free_space"] = free_space(p["free_space_path"])
        facts["duration_s"] = round(time.monotonic() - started, 3)
        return {"changed": False, **facts}

    run_request(module, work, what="Inspecting the database", urls=(p["url"], p["compare_with"]))


if __name__ == "__main__":
    main()
