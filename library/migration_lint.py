#!/usr/bin/python
"""Ansible module: lint a plan's offline SQL, revision by revision (thin wrapper over module_utils)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: migration_lint
short_description: Lint the offline SQL of pending Alembic revisions with squawk and PostgreSQL's own parser
description:
  - Lints each pending revision's offline SQL (the O(revisions) an C(alembic_migrate) check-mode run returns) on
    its own, so every finding names its revision. Rules come from C(squawk), the PostgreSQL migration linter,
    and from release-migrations' own rules on PostgreSQL's parser (C(pglast)) for what squawk does not check -
    an C(UPDATE)/C(DELETE) of a whole existing table, C(UPDATE ... LIMIT), C(COMMIT) inside a C(DO) block run
    in a transaction, statements PostgreSQL refuses inside a transaction, table rewrites, a revision without a
    real C(downgrade()).
  - It knows what Alembic does. Statements inside C(autocommit_block()) run outside the transaction; tables
    created earlier in the plan are new and empty, so lock and scan findings on them are dropped; rules that
    only ask for C(lock_timeout)/C(statement_timeout) never run (the apply path sets both).
  - Each finding has the revision, its file, the line in its SQL, the statement, the rule, where the rule comes
    from, its severity, why it hurts a live PostgreSQL and the safe pattern.
  - Read-only; never changes anything and never fails on findings - RV(blocking) lists what the environment
    refuses, and the caller decides.
  - Runs where C(squawk) is installed (the runner; C(pip install -r requirements.txt)).
  - The same code is C(bin/lint-migrations), for a developer's machine or CI.
version_added: "1.0.0"
options:
  revisions:
    description:
      - The pending revisions in the order they run, each with C(revision), C(sql) and optionally C(path),
        C(downgrade) - the RV(alembic_migrate#module:revisions) of a check-mode run.
    type: list
    elements: dict
    required: true
  direction:
    description:
      - C(up) or C(down) (the downgrade rule only applies to an upgrade).
    type: str
    choices: [up, down, none]
    default: up
  version_table:
    description:
      - Alembic's version table; statements on it are Alembic's own and never reported.
    type: str
    default: alembic_version
  severity:
    description:
      - The environment's severities, a dict of rule to C(error), C(warn), C(info) or C(off), over the defaults
        (the README's rule table).
    type: dict
    default: {}
  blocking:
    description:
      - The severities that block the run; C(refused) blocks the statements PostgreSQL refuses as written
        (C(syntax-error), C(update-limit), C(commit-in-do-block), C(not-in-transaction),
        C(ban-concurrent-index-creation-in-transaction)) whatever their severity.
    type: list
    elements: str
    default: [error]
  accept:
    description:
      - Reviewed exceptions, each C(REVISION:RULE) (a revision id or a prefix of at least 4 characters). An
        accepted finding never blocks and is listed in RV(accepted) (the report shows it).
    type: list
    elements: str
    default: []
  pg_version:
    description:
      - The server's PostgreSQL version (C(15.4)); some rules depend on it (a constant default is free from 11 on).
    type: str
attributes:
  check_mode:
    support: full
    details: Read-only; check mode changes nothing either.
requirements:
  - squawk (PyPI squawk-cli)
  - pglast
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Read the plan and its SQL
  alembic_migrate:
    config: /app/alembic.ini
    url: "{{ rm_database_url }}"
  check_mode: true
  register: plan

- name: Lint it as production would
  migration_lint:
    revisions: "{{ plan.revisions }}"
    severity: {changing-column-type: error}
    accept: ["4d3f6b8c0e54:ban-drop-column"]
    pg_version: "15.4"
  register: lint

- name: Refuse what blocks
  ansible.builtin.assert:
    that: lint.blocking | length == 0
    fail_msg: "{{ lint.msg }}"
"""

RETURN = r"""
findings:
  description:
    - Every finding (accepted ones included), in the order the revisions run, each with C(revision), C(path),
      C(line), C(statement), C(rule), C(source) (C(squawk) or C(release-migrations)), C(severity), C(why),
      C(fix), C(detail), C(refused) (PostgreSQL refuses it as written), C(accepted) (the exception that let it
      through, or null) and C(blocking).
  returned: always
  type: list
  elements: dict
blocking:
  description: The findings that block the run (their severity blocks and no exception accepts them).
  returned: always
  type: list
  elements: dict
accepted:
  description: The findings let through by a reviewed exception (O(accept)).
  returned: always
  type: list
  elements: dict
unused_accepts:
  description: Exceptions in O(accept) that matched no finding (a stale exception to remove).
  returned: always
  type: list
  elements: str
counts:
  description: How many findings of each severity (accepted ones not counted).
  returned: always
  type: dict
  sample: {error: 0, warn: 2, info: 5}
statements:
  description: How many statements were parsed.
  returned: always
  type: int
squawk_version:
  description: The squawk version that ran.
  returned: always
  type: str
msg:
  description: One line per blocking finding, or a summary.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.migration_lint import describe, lint_plan
from ansible.module_utils.module_shell import argument_spec, run_request

ARGUMENT_SPEC = argument_spec(
    revisions={"type": "list", "elements": "dict", "required": True},
    direction={"type": "str", "choices": ["up", "down", "none"], "default": "up"},
    version_table={"type": "str", "default": "alembic_version"},
    severity={"type": "dict", "default": {}},
    blocking={"type": "list", "elements": "str", "default": ["error"]},
    accept={"type": "list", "elements": "str", "default": []},
    pg_version={"type": "str"},
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params

    def work() -> dict:
        result = lint_plan(p["revisions"], direction=p["direction"], version_table=p["version_table"],
                           severity={str(k): str(v) for k, v in p["severity"].items()}, accept=p["accept"],
                           blocking=p["blocking"], pg_version=p["pg_version"] or None)
        return {**result, "changed": False, "msg": describe(result)}

    run_request(module, work, what="The migration lint")


if __name__ == "__main__":
    main()
