#!/usr/bin/python
# MIT License
"""Ansible module: make a (scratch) PostgreSQL database exist or not."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_database
short_description: Create or drop a scratch PostgreSQL database named by a URL
description:
  - Makes the database named in O(url) exist (O(state=present)) or not (O(state=absent)).
  - Used by the verify and drill steps for throw-away databases. Dropping terminates the
    database's other connections first (PostgreSQL 13 and later).
  - Connects to O(maintenance_db) on the same server with the same credentials.
  - A name longer than PostgreSQL's 63 bytes is refused (PostgreSQL would cut it to another name).
version_added: "1.0.0"
options:
  state:
    description: Whether the database should exist.
    type: str
    choices: [present, absent]
    default: present
  maintenance_db:
    description: Database to connect to while creating or dropping.
    type: str
    default: postgres
  fresh:
    description:
      - With O(state=present), the database must not exist yet; creating it is refused (and nothing changes)
        when it does. Scratch databases are created this way, so one that was there before is never used
        (or later dropped) as a scratch.
    type: bool
    default: false
  protect:
    description: Database names O(state=absent) refuses to drop (the run's live database).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - connection
attributes:
  check_mode:
    support: full
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Create a scratch database for a drill
  pg_database:
    url: "{{ rm_database_url | pg_with_database('release_manager_drill') }}"

- name: Drop it again
  pg_database:
    url: "{{ rm_database_url | pg_with_database('release_manager_drill') }}"
    state: absent
"""

RETURN = r"""
database:
  description: Name of the database.
  returned: always
  type: str
  sample: release_manager_drill
duration_s:
  description: Seconds the create or drop took.
  returned: always
  type: float
  sample: 0.35
state:
  description: The state asked for.
  returned: always
  type: str
  sample: present
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.module_shell import CONNECTION_SPEC, argument_spec, run_request
from ansible.module_utils.scratch_database import ensure_database

ARGUMENT_SPEC = argument_spec(
    CONNECTION_SPEC,
    state={"type": "str", "choices": ["present", "absent"], "default": "present"},
    maintenance_db={"type": "str", "default": "postgres"},
    fresh={"type": "bool", "default": False},
    protect={"type": "list", "elements": "str", "default": []},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params

    def work(conn) -> dict:
        started = time.monotonic()
        changed = ensure_database(conn, p["state"] == "present", maintenance_db=p["maintenance_db"],
                                  check=module.check_mode, fresh=p["fresh"], protect=tuple(p["protect"]))
        return {"changed": changed, "database": conn.dbname, "state": p["state"],
                "duration_s": round(time.monotonic() - started, 3)}

    run_request(module, work, what="pg_database", urls=(p["url"],))


if __name__ == "__main__":
    main()
