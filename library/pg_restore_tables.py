#!/usr/bin/python
"""Ansible module: restore just some tables from a backup, keeping the other tables' writes (thin wrapper)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_restore_tables
short_description: Restore only the tables a migration touched, from the pre-migration backup, in one short swap
description:
  - The way back from a revision that cannot be downgraded, without throwing away every write since the backup.
    Checks the backup against its manifest's sha256 first.
  - Loads O(tables) (their definition, data, indexes, constraints and the sequences they own, as the backup has
    them) into a new side schema while the app keeps running, then in one transaction under O(lock_timeout)
    (retried O(swap_retries) times) moves the live tables and the tables the plan created (O(created)) into a new
    schema C(rm_replaced_<run_id>), moves the restored tables in, and sets the version table to O(revision).
  - Nothing is dropped but the foreign keys of the tables moved aside. The replaced tables stay in
    C(rm_replaced_<run_id>) for the operator to inspect (drop that schema when done), as a kept copy; their foreign
    keys are dropped in the swap (returned in RV(dropped_foreign_keys)), so the live tables' deletes are neither
    refused by nor cascaded into the copy. Every other table keeps its writes.
  - Nothing the load runs acts on a live object; every statement taken from the backup is pointed at the side
    schema, and one that would still act on anything outside it (a table, a sequence's value) is refused before it
    runs. Any failure once the side schema exists (the load, the swap, a lock timeout) drops it and swaps nothing,
    so the same task with the same O(run_id) can simply be run again.
  - Idempotent. Run again after it finished (the replaced schema records what it did, the live tables are the
    ones it restored, the version table is at O(revision)) it changes nothing and says so (RV(already_done)).
  - Refused before anything changes when a table outside the set references one inside it by foreign key, or a view
    depends on one (after the swap they would point at the replaced table), or a table is partitioned; restore the
    whole backup then (M(pg_restore)).
  - Works with every format M(pg_backup) writes (plain through the dump itself, the others through
    C(pg_restore -f -)).
version_added: "1.0.0"
options:
  src:
    description: The backup (pg_backup's file or directory, with its manifest beside it).
    type: path
    required: true
  tables:
    description:
      - The tables to restore, C(table) (schema public) or C(schema.table), each part written as PostgreSQL's
        C(quote_ident) writes it (C(users), C(tenant_b.items), C("Tenant A"."Odd""Name")); unquoted parts are folded
        to lower case.
      - Two tables of one name in different schemas are restored in separate runs.
    type: list
    elements: str
    required: true
  created:
    description: Tables the plan created (not in the backup), named as in O(tables); they are moved aside with the
      replaced ones.
    type: list
    elements: str
    default: []
  revision:
    description: The revision(s) the version table is set to in the swap (the run's starting revision); empty for base.
    type: list
    elements: str
    default: []
  forget_checksums:
    description: Revisions no longer applied after the swap; their recorded checksums are removed.
    type: list
    elements: str
    default: []
  lock_timeout:
    description: The swap's C(lock_timeout); a swap that waits longer is rolled back and retried.
    type: str
    default: 2s
  swap_retries:
    description: How many times a swap that hit O(lock_timeout) is retried.
    type: int
    default: 5
  run_id:
    description: Names the side and replaced schemas, C(rm_restore_<run_id>) and C(rm_replaced_<run_id>) (both new,
      unless this run's restore is already done).
    type: str
    required: true
  pg_bin_dir:
    description: Where C(pg_restore) is, for the non-plain formats (default, the newest found).
    type: path
attributes:
  check_mode:
    support: full
    details: Checks the backup and the refusals (or recognises a restore already done); changes nothing.
extends_documentation_fragment:
  - connection
  - connection.version_table
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Put users back as the backup has it, keep every other table's writes
  pg_restore_tables:
    url: "{{ rm_database_url }}"
    src: "{{ backup_result.path }}"
    tables: [users]
    created: [user_preferences]
    revision: [8f1a2b3c4d5e]
    run_id: "{{ preflight_result.run_id }}"
"""

RETURN = r"""
tables:
  description: The tables restored (bare in public, else schema-qualified; quoted as quote_ident would).
  returned: always
  type: list
  elements: str
moved_aside:
  description: The tables the plan created, moved into the replaced schema.
  returned: always
  type: list
  elements: str
replaced_schema:
  description: Where the replaced tables are kept (drop it when no longer needed).
  returned: always
  type: str
rows:
  description: Rows loaded per table.
  returned: when changed
  type: dict
swap_s:
  description: How long the swap transaction took (the only time the tables are locked); 0 when none ran.
  returned: always
  type: float
swap_attempts:
  description: How many swap transactions it took (lock timeouts retried); 0 when none ran.
  returned: always
  type: int
dropped_foreign_keys:
  description: The foreign keys of the tables moved aside, dropped in the swap (C(schema.table.constraint)); the
    kept copy no longer holds back, nor is reached by, the live tables' deletes.
  returned: always
  type: list
  elements: str
already_done:
  description: Whether this run's restore had already finished (then nothing changed).
  returned: always
  type: bool
locked_tables:
  description: The tables another session held a lock on when the swap gave up after its lock timeouts.
  returned: when the swap hit the lock timeout
  type: list
  elements: str
refusals:
  description: Why the tables cannot be restored on their own (the task fails).
  returned: when refused
  type: list
  elements: str
duration_s:
  description: Wall time in seconds, from reading the backup to the swap's commit.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_shell import CONNECTION_SPEC, VERSION_TABLE_SPEC, argument_spec, run_request

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC, VERSION_TABLE_SPEC,
    src={"type": "path", "required": True},
    tables={"type": "list", "elements": "str", "required": True},
    created={"type": "list", "elements": "str", "default": []},
    revision={"type": "list", "elements": "str", "default": []},
    forget_checksums={"type": "list", "elements": "str", "default": []},
    lock_timeout={"type": "str", "default": "2s"},
    swap_retries={"type": "int", "default": 5},
    run_id={"type": "str", "required": True},
    pg_bin_dir={"type": "path"},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params

    def work(conn) -> dict:
        from ansible.module_utils.table_restore import TableRestoreRequest, restore_tables

        req = TableRestoreRequest(
            url=p["url"], conn=conn, src=p["src"], tables=p["tables"], created=p["created"],
            version_table=p["version_table"], revision=p["revision"], forget_checksums=p["forget_checksums"],
            lock_timeout=p["lock_timeout"], swap_retries=p["swap_retries"], run_id=p["run_id"],
            pg_bin_dir=p["pg_bin_dir"])
        result = restore_tables(req, check=module.check_mode)
        if result["already_done"]:
            result["msg"] = (f"Already restored {', '.join(result['tables'])} from {p['src']} (run {p['run_id']}): "
                             f"the replaced tables are in {result['replaced_schema']} and the version table is at the "
                             "revision; nothing to do")
            return result
        verb = "Would restore" if module.check_mode else "Restored"
        result["msg"] = (f"{verb} {', '.join(result['tables'])} from {p['src']}; replaced tables kept in "
                         f"{result['replaced_schema']} (their foreign keys dropped: a kept copy)")
        return result

    run_request(module, work, what="The table restore", urls=(p["url"],))


if __name__ == "__main__":
    main()
