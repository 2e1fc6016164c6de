#!/usr/bin/python
# MIT License
"""Ansible module: take a timestamped, verified PostgreSQL backup with a manifest."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_backup
short_description: Take a timestamped, verified PostgreSQL backup with a JSON manifest
description:
  - Runs C(pg_dump) against the database named in O(url) and writes
    C(<database>-<UTC %Y%m%dT%H%M%SZ>[-label].<ext>) into O(dest), where ext is C(bin) (binary, the
    default), C(dump) (custom), C(dir) (directory), C(sql.gz) or C(sql) (plain) or C(tar).
  - The backup is written as C(<name>.partial) and renamed only after C(pg_dump) succeeded and the
    written bytes were verified; a failed or interrupted backup is removed and never looks finished.
  - Beside it, C(<name>.manifest.json) records the database, server and client versions, the Alembic
    revision at backup time, size, sha256 (per file for the directory and binary formats) and durations. A backup
    without a manifest does not count as verified.
  - Refuses, before dumping, a C(pg_dump) older than the server and names both versions. Client tools are
    taken from O(pg_bin_dir), else the first of PATH, the embedded server's tools, and
    C(/usr/lib/postgresql/*/bin) (newest first) that is at least as new as the server.
  - The password travels only in the environment of C(pg_dump) (C(PGPASSWORD)), never on a command line,
    and is masked in every message.
version_added: "1.0.0"
options:
  dest:
    description: Directory that keeps the backups; created if missing.
    type: path
    required: true
  format:
    description:
      - C(binary) (a directory holding the schema and the rest by C(pg_dump), the rows of every table of at least
        O(binary_min_bytes) in PostgreSQL's binary COPY format, in pieces, all in one snapshot; every file
        gzip-compressed by this module with ISA-L and hashed while it is written; the server loads binary rows
        much faster than text, see BENCHMARKS.md; restorable by hand with psql and gzip, see the README),
        C(plain) (SQL text streamed from C(pg_dump), gzip-compressed by this module with ISA-L and
        hashed while it is written; restorable with the runbook's C(gunzip -c | psql) too),
        C(directory) (one file per table, parallel dump and parallel restore; gzip by this module in
        parallel after the dump), C(custom) (one file compressed by C(pg_dump); parallel restore) or
        C(tar).
      - The default is C(binary) because the restore is the downtime of an incident, and a binary backup restores
        fastest (see BENCHMARKS.md), for about the time and size of C(plain). Choose C(plain) for a backup that
        C(gunzip -c | psql) restores (the runbook's way), C(directory) or C(custom) for C(pg_restore).
    type: str
    choices: [binary, custom, directory, plain, tar]
    default: binary
  compression:
    description:
      - C(none), C(gzip:N), C(lz4[:N]), C(zstd[:N]) or a bare level (C(0) = none, C(1)-C(9) = gzip).
      - Defaults to C(gzip:1) (fast, most of the gain); C(none) for O(format=tar), which cannot be compressed.
      - lz4 and zstd need C(pg_dump) 16 or later built with them (the embedded pgserver build is not); the
        module probes the client and fails clearly before dumping. O(format=plain) takes gzip or none,
        O(format=binary) gzip only.
    type: str
  jobs:
    description: Parallel C(pg_dump) jobs (O(format=directory)), or tools dumping at once (O(format=binary)).
    type: int
    default: 2
  binary_min_bytes:
    description:
      - O(format=binary) only. Tables whose heap is at least this many bytes have their rows dumped in binary,
        in pieces of about 64 MiB of pages; smaller tables stay text in the SQL. A table with a column whose
        binary form names an OID (a composite or an extension's type, an array of an enum, C(reg*)) stays text
        whatever its size.
    type: int
    default: 8388608
  verify:
    description:
      - Verify the backup before giving it its final name. Archive formats must list with
        C(pg_restore --list), and for O(format=directory) every data file the list names must be there;
        plain dumps (and both SQL files of a binary backup) must end with C(-- PostgreSQL database dump complete),
        and each binary rows file must be a whole binary COPY stream (checked on the streams as they are
        written). The sha256 is computed while writing (or in parallel right after, per file).
    type: bool
    default: true
  verify_read:
    description:
      - Also read the whole backup back, with C(pg_restore -f /dev/null) for archive formats or a full
        gzip decode for plain dumps and every file of a binary backup. Stronger; costs a second read of the backup.
    type: bool
    default: false
  keep:
    description:
      - Keep this many finished backups of the same database in O(dest) and delete older ones with their
        manifests (never the newest verified one, never the one just written, never one in O(protect)).
        C(0) keeps all.
      - Only backups this module wrote count and are removed (a manifest beside them names them); other
        files in O(dest), even when named like a backup, are never touched.
      - Leftover C(.partial) backups of the database untouched for an hour, whose content is C(pg_dump)
        output, are removed as well.
    type: int
    default: 0
  protect:
    description:
      - Backups that retention must not remove, whatever their age (the backup a restore is about to
        load, the one a rollback may need).
    type: list
    elements: path
    default: []
  label:
    description: Short tag added to the name and the manifest (letters, digits, C(.) and C(_)), e.g. C(pre_release_42).
    type: str
  pg_bin_dir:
    description: Directory holding C(pg_dump) and C(pg_restore) to use instead of searching.
    type: path
  max_age:
    description:
      - Seconds. When greater than 0 and the newest verified backup of the same database, server and Alembic
        revision in O(dest) is younger, return that backup (RV(reused=true), not changed) and take none.
      - The reused backup is checked like a new one first (size and sha256 against its manifest); a damaged
        one is not reused (RV(reuse_refused) says why) and a new backup is taken.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Connects and checks the client and server versions, returns the path it would write, writes nothing.
extends_documentation_fragment:
  - connection
  - connection.version_table
notes:
  - Restore with M(pg_restore), which checks the manifest checksum first.
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Back up before the migration (binary rows for big tables, gzip:1 by ISA-L), keep the last 7
  pg_backup:
    url: "{{ rm_database_url }}"
    dest: /var/backups/release_manager
    label: pre_release
    keep: 7
  register: rm_backup

- name: Big database - directory format, 4 parallel jobs, zstd (PostgreSQL 16 client with zstd)
  pg_backup:
    url: "{{ rm_database_url }}"
    dest: /var/backups/release_manager
    format: directory
    jobs: 4
    compression: zstd:3

- name: Runbook parity - plain SQL + gzip; reuse a backup taken in the last 30 minutes
  pg_backup:
    url: "{{ rm_database_url }}"
    dest: /var/backups/release_manager
    format: plain
    max_age: 1800
"""

RETURN = r"""
path:
  description: The backup (file, or directory for the directory and binary formats).
  returned: always
  type: str
  sample: /var/backups/release_manager/release_manager-20240501T120000Z-pre_release.dump
manifest_path:
  description: The manifest beside the backup.
  returned: always
  type: str
  sample: /var/backups/release_manager/release_manager-20240501T120000Z-pre_release.dump.manifest.json
manifest:
  description:
    - The manifest (format_version, database, host, server_version, client_version, alembic_revision,
      alembic_revisions, label, format, compression, jobs, path, size_bytes, sha256, files (directory
      format), started_at, finished_at, duration_s, dump_duration_s, verified, verify_method, table_count,
      database_size_bytes). In check mode, the fields known before dumping.
  returned: always
  type: dict
size_bytes:
  description: Size of the backup on disk (null in check mode).
  returned: always
  type: int
  sample: 12897321
sha256:
  description: sha256 of the file; for the directory format, of its sorted C(relpath:sha256) lines.
  returned: always
  type: str
duration_s:
  description: Seconds the module took.
  returned: always
  type: float
format:
  description: Backup format.
  returned: always
  type: str
  sample: custom
compression:
  description: Compression used, canonical spelling.
  returned: always
  type: str
  sample: gzip:1
database:
  description: Database backed up.
  returned: always
  type: str
  sample: release_manager
alembic_revision:
  description: Alembic revision at backup time (comma-joined when several heads), null without a version table.
  returned: always
  type: str
  sample: 3f2a9c1b7d4e
server_version:
  description: PostgreSQL server version.
  returned: always
  type: str
  sample: "16.2"
client_version:
  description: Version of the pg_dump used.
  returned: always
  type: str
  sample: "16.2"
removed:
  description: Paths deleted by retention (old backups, their manifests, stale .partial leftovers).
  returned: always
  type: list
  elements: str
reused:
  description: True when a verified backup younger than O(max_age) was returned instead of taking one.
  returned: always
  type: bool
reuse_refused:
  description: Why the backup O(max_age) would have reused was not (its bytes no longer match its manifest).
  returned: when a candidate was refused
  type: str
msg:
  description: One line for the operator.
  returned: always
  type: str
  sample: Backed up release_manager (12.3 MiB) to /var/backups/release_manager/release_manager-....dump in 1.2 s
"""

from ansible.module_utils.backup_runner import BackupRequest, run_backup
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_shell import CONNECTION_SPEC, VERSION_TABLE_SPEC, argument_spec, run_request

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC, VERSION_TABLE_SPEC,
    dest={"type": "path", "required": True},
    format={"type": "str", "choices": ["binary", "custom", "directory", "plain", "tar"], "default": "binary"},
    binary_min_bytes={"type": "int", "default": 8 << 20},
    compression={"type": "str"},
    jobs={"type": "int", "default": 2},
    verify={"type": "bool", "default": True},
    verify_read={"type": "bool", "default": False},
    keep={"type": "int", "default": 0},
    protect={"type": "list", "elements": "path", "default": []},
    label={"type": "str"},
    pg_bin_dir={"type": "path"},
    max_age={"type": "int", "default": 0},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params

    def work(conn) -> dict:
        return run_backup(BackupRequest(
            url=p["url"], conn=conn, dest=p["dest"], format=p["format"], compression=p["compression"], jobs=p["jobs"],
            verify=p["verify"], verify_read=p["verify_read"], keep=p["keep"], label=p["label"],
            pg_bin_dir=p["pg_bin_dir"], version_table=p["version_table"], max_age=p["max_age"],
            protect=[str(x) for x in p["protect"] if x], check=module.check_mode,
            binary_min_bytes=p["binary_min_bytes"],
        ))

    run_request(module, work, what="Backup", urls=(p["url"],),
                interrupted="The unfinished .partial was removed; nothing looks finished.")


if __name__ == "__main__":
    main()
