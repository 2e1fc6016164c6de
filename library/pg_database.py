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
version_added: "1.0.0"
options:
  url:
    description: C(postgresql://) URL whose database is created or dropped.
    type: str
    required: true
  state:
    description: Whether the database should exist.
    type: str
    choices: [present, absent]
    default: present
  maintenance_db:
    description: Database to connect to while creating or dropping.
    type: str
    default: postgres
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
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import parse_url, redact, secrets_of
from ansible.module_utils.scratch_database import ensure_database


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True, "no_log": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "maintenance_db": {"type": "str", "default": "postgres"},
        },
        supports_check_mode=True,
    )
    url = module.params["url"]
    started = time.monotonic()
    try:
        name = parse_url(url).dbname
        changed = ensure_database(
            url, module.params["state"] == "present", maintenance_db=module.params["maintenance_db"],
            check=module.check_mode,
        )
    except OperatorError as err:
        module.fail_json(msg=redact(str(err), secrets_of(url)), hint=err.hint)
    except Exception as exc:  # anything unforeseen: explained, secrets removed, never a raw traceback
        module.fail_json(msg=redact(f"pg_database failed: {type(exc).__name__}: {exc}", secrets_of(url)))
    module.exit_json(changed=changed, database=name, state=module.params["state"],
                     duration_s=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
