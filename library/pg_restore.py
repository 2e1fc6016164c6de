#!/usr/bin/python
# MIT License
"""Ansible module: restore a pg_backup backup after checking its manifest checksum."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_restore
short_description: Restore a pg_backup backup into a PostgreSQL database, checksum first
description:
  - Restores a backup written by M(pg_backup) (custom, directory, tar or plain SQL) into the database
    named in O(url), then reports the Alembic revision and the row count of every user table.
  - O(src) is a backup, or a directory of backups; then the latest verified backup of O(source_database)
    (by the manifest's C(finished_at)) is used.
  - Before the target is touched, the manifest is read and the backup's sha256 (per file for the
    directory format) compared with it. A modified or truncated backup is refused and the target is
    not even created.
  - Restores into a new database by default (created from C(template0)). A database that already has
    user tables is restored over only with O(confirm=true); add O(clean=true) to drop and recreate it
    first (C(DROP DATABASE ... WITH (FORCE)) on PostgreSQL 13+). Without O(clean), archive formats
    replace the backup's objects in place (C(pg_restore --clean --if-exists)); plain SQL needs O(clean).
  - After a restore the database carries the comment C(release-migrations restored <backup> sha256 <sha>);
    a rerun with the same backup finds it and changes nothing (unless O(clean=true), or the database no
    longer has the backup's revision and number of tables).
  - C(latest) never picks a C(pre_restore) copy (the state a restore replaced), and prefers backups of the
    target's own server. Two restores of one database never run at once (an advisory lock in
    O(maintenance_db)).
  - Into a database this restore makes (it did not exist, or O(clean=true) dropped it), every format loads
    on O(jobs) sessions at once - the schema in one C(psql) transaction, then the tables' rows, a big table's
    rows cut at line boundaries into chunks loaded side by side (C(COPY ... FROM STDIN) through libpq), then
    the indexes and constraints, each as soon as what it needs is loaded, then the rest in dump order. Plain
    backups are decoded by ISA-L; an archive is read as SQL through C(pg_restore -f -). Only statements at the
    top level are ever looked at (never a line of a string, a quoted name or a function body). That load is not
    one transaction, so it is all or nothing another way. The database is loaded under another name
    (C(<name>_rm_loading_<hash>)) and renamed to its own only when the load is complete, so a restore killed
    half way never leaves a half-loaded database under the target's name; a load that fails or is interrupted
    (SIGTERM, SIGHUP, SIGINT) drops it again (RV(dropped)), and the error says so; the restored mark is set only
    after the load.
  - Into a database that exists and that this restore did not make (an empty one, or one restored over in
    place), plain SQL is streamed into C(psql -v ON_ERROR_STOP=1) between C(BEGIN) and a C(COMMIT) sent as its
    very last bytes (a failure or a stream cut short rolls back), and archive formats load with
    C(pg_restore --single-transaction --exit-on-error). The password travels only in the environment.
version_added: "1.0.0"
options:
  src:
    description: A backup path, or a directory of backups (latest verified backup of O(source_database)).
    type: path
    required: true
  source_database:
    description:
      - Database the backup is of. With an O(src) directory, the latest verified backup of this database is
        restored (default the target's name). With a backup path, it must match the database the backup holds.
      - Restoring a backup of another database over a target that has tables is refused unless this names the
        backup's database (a confirmation that replacing the target's data with that database's is meant).
        Restoring it into a new or empty database is allowed with a warning.
    type: str
  jobs:
    description:
      - Sessions loading at once. In a database this restore makes, for every format (see above); C(1) loads
        a plain backup in one C(psql) transaction. Into an existing database, C(pg_restore -j) for custom and
        directory (tar restores with one; plain SQL with one C(psql) transaction).
    type: int
    default: 2
  create:
    description: Create the target database when it does not exist.
    type: bool
    default: true
  clean:
    description: Drop and recreate the target database first when it exists (needs O(confirm) if it has tables).
    type: bool
    default: false
  confirm:
    description: Required to restore over a database that has any user table. Set it on purpose, per run.
    type: bool
    default: false
  no_owner:
    description:
      - Skip ownership and privileges (C(--no-owner --no-privileges); for plain SQL the C(OWNER TO),
        C(GRANT) and C(REVOKE) statements are filtered out), so objects belong to the restoring user.
    type: bool
    default: true
  pg_bin_dir:
    description: Directory holding C(pg_restore) and C(psql) to use instead of searching.
    type: path
  verify_checksum:
    description: Check the backup against its manifest first. C(false) also allows a backup without a manifest.
    type: bool
    default: true
  count_rows:
    description: Report exact C(count(*)) of every user table after the restore.
    type: bool
    default: true
  load_settings:
    description:
      - Load with C(synchronous_commit=off) (a session setting passed through C(PGOPTIONS)); safe because
        a failed restore is redone from scratch. Plain dumps load in one transaction.
      - A superuser's parallel load also sets C(deadlock_timeout=100ms) on its sessions, so autovacuum started
        on a freshly loaded table yields to the next index or constraint build within 100 ms instead of 1 s.
    type: bool
    default: true
  maintenance_db:
    description: Database to connect to for creating and dropping the target (and for the restore lock).
    type: str
    default: postgres
  at_revision:
    description:
      - With O(src) a directory and O(max_backup_age), the backup must have been taken at this Alembic revision
        (comma-joined heads; empty for base) - the revision the database is recorded at, for a drill.
    type: str
  max_backup_age:
    description:
      - With O(src) a directory, pick the newest verified backup taken at O(at_revision) no older than this many
        seconds. When there is none the task fails, saying "stale backup", with RV(stale).
    type: float
  allow_other_server:
    description:
      - Allow restoring over a target that has tables a backup taken on another server (another PostgreSQL
        system identifier), as when recovering onto a new server. Without it that is refused.
      - With O(src) a directory, backups of the target's own server are preferred for C(latest).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - Resolves O(src), reads the manifest and verifies the checksum, looks at the target if reachable,
        and reports what would happen (RV(refusal) says why a real run would refuse). Touches nothing. Roles
        plan with it (RV(src), RV(manifest)).
extends_documentation_fragment:
  - connection
  - connection.version_table
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Drill - restore the latest backup of release_manager into a scratch database
  pg_restore:
    url: "{{ rm_database_url | pg_with_database('release_manager_drill') }}"
    src: /var/backups/release_manager
    source_database: release_manager
    clean: true
    confirm: true
  register: rm_restore

- name: Plan a restore (check mode) and read the revision the backup holds
  pg_restore:
    url: "{{ rm_database_url }}"
    src: /var/backups/release_manager
  check_mode: true
  register: rm_restore_plan

- name: Last resort - restore production over itself (needs the confirmation variable)
  pg_restore:
    url: "{{ rm_database_url }}"
    src: "{{ rm_backup.path }}"
    clean: true
    confirm: "{{ rm_restore_confirm | bool }}"
    jobs: 4
"""

RETURN = r"""
src:
  description: The backup restored (resolved when O(src) was a directory).
  returned: always
  type: str
  sample: /var/backups/release_manager/release_manager-20240501T120000Z.dump
manifest:
  description: The backup's manifest (see M(pg_backup)); null when absent and O(verify_checksum=false).
  returned: always
  type: dict
database:
  description: Target database.
  returned: always
  type: str
  sample: release_manager_drill
format:
  description: Backup format.
  returned: always
  type: str
  sample: custom
sha256:
  description: sha256 of the backup, checked against the manifest.
  returned: always
  type: str
created:
  description: The target database did not exist and was created (or would be, in check mode).
  returned: always
  type: bool
cleaned:
  description: The target database was dropped and recreated first.
  returned: always
  type: bool
confirm_required:
  description: Check mode only - the target has tables and O(confirm) is not set, so a real run would fail.
  returned: check mode
  type: bool
refusal:
  description: Check mode only - why a real run would refuse (null when it would go ahead).
  returned: check mode
  type: str
backup_database:
  description: The database the backup holds (from its manifest, else its file name).
  returned: always
  type: str
chosen_because:
  description: Why this backup (the one asked for, the newest verified one, the newest at the recorded revision).
  returned: always
  type: str
stale:
  description: True when no backup at O(at_revision) younger than O(max_backup_age) exists (the task fails).
  returned: failure
  type: bool
duration_s:
  description: Seconds for the whole module run.
  returned: always
  type: float
restore_duration_s:
  description: Seconds spent loading (psql, pg_restore or the parallel load) only.
  returned: always
  type: float
load:
  description:
    - How the backup was loaded - C(method) (C(parallel), C(parallel (pg_restore -f - as SQL)),
      C(psql, one transaction) or C(pg_restore -j N)) and C(sessions). After a parallel load also
      C(copy_chunks), C(rows_loaded) and C(phases_s) - for C(schema), C(rows), C(builds) (indexes and
      constraints) and C(after), the seconds of the first start and the last end from the load's start.
  returned: when a restore ran
  type: dict
timings:
  description:
    - Seconds per step - C(check_s) (the target read and the backup's checksum), C(recreate_s) (drop and
      create), C(load_s) and C(facts_s) (revision and row counts).
  returned: when a restore ran
  type: dict
dropped:
  description: After a failed load into a database this restore made - whether that database was dropped again.
  returned: failure
  type: bool
alembic_revision:
  description: Alembic revision(s) found in the restored database (empty list without a version table).
  returned: always
  type: list
  elements: str
  sample: [3f2a9c1b7d4e]
row_counts:
  description:
    - Exact row count per user table, keyed C(table) (public schema) or C(schema.table); the version
      table and extension-owned tables are left out, as M(pg_inspect) does.
  returned: always
  type: dict
  sample: {users: 120, releases: 42}
tables:
  description: Number of user tables in the restored database.
  returned: always
  type: int
  sample: 7
server_version:
  description: Target server version.
  returned: always
  type: str
client_version:
  description: Version of the client tools used.
  returned: when a restore ran or was planned against a reachable server
  type: str
msg:
  description: One line for the operator.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_shell import CONNECTION_SPEC, VERSION_TABLE_SPEC, argument_spec, run_request
from ansible.module_utils.restore_runner import RestoreRequest, run_restore

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC, VERSION_TABLE_SPEC,
    src={"type": "path", "required": True},
    source_database={"type": "str"},
    jobs={"type": "int", "default": 2},
    create={"type": "bool", "default": True},
    clean={"type": "bool", "default": False},
    confirm={"type": "bool", "default": False},
    no_owner={"type": "bool", "default": True},
    pg_bin_dir={"type": "path"},
    verify_checksum={"type": "bool", "default": True},
    count_rows={"type": "bool", "default": True},
    load_settings={"type": "bool", "default": True},
    maintenance_db={"type": "str", "default": "postgres"},
    allow_other_server={"type": "bool", "default": False},
    at_revision={"type": "str"},
    max_backup_age={"type": "float"},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params

    def work(conn) -> dict:
        return run_restore(RestoreRequest(
            url=p["url"], conn=conn, src=p["src"], source_database=p["source_database"], jobs=p["jobs"],
            create=p["create"],
            clean=p["clean"], confirm=p["confirm"], no_owner=p["no_owner"], pg_bin_dir=p["pg_bin_dir"],
            verify_checksum=p["verify_checksum"], count_rows=p["count_rows"], load_settings=p["load_settings"],
            version_table=p["version_table"], maintenance_db=p["maintenance_db"],
            allow_other_server=p["allow_other_server"], at_revision=p["at_revision"],
            max_backup_age=p["max_backup_age"], check=module.check_mode,
        ))

    run_request(module, work, what="Restore", urls=(p["url"],),
                interrupted="Rerun with clean: true and confirm: true once the cause is fixed.")


if __name__ == "__main__":
    main()
