"""Jinja filters for running a fleet (one inventory host per database) in waves; the logic is
module_utils/fleet_summary.py.

    {{ rm_waves | fleet_waves }}                 -> [1, 5, '100%'] for the play's `serial` ("1, 5, 100%" works too)
    {{ rm_max_fail_percentage | fleet_budget }}  -> 0..100 for the play's `max_fail_percentage` (none: no budget)
    {{ ansible_play_hosts_all | fleet_plan(rm_fleet_waves, 'sorted') }} -> the waves Ansible makes: [[h1], [h2, ...]]
    {{ hostvars[h].rm_database_url | fleet_database_name }} -> the database's name, or none for a URL the
                                                   modules would refuse (the summary must not fail on it)
"""

from __future__ import annotations

from pathlib import Path

import ansible.module_utils
from ansible.errors import AnsibleFilterError

_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")  # our module_utils, as the modules import them
ansible.module_utils.__path__.extend([] if _UTILS in ansible.module_utils.__path__ else [_UTILS])

from ansible.module_utils.fleet_summary import checked_budget, parse_waves, plan_waves  # noqa: E402
from ansible.module_utils.operator_error import OperatorError  # noqa: E402
from ansible.module_utils.pg_connection import ConnInfo  # noqa: E402


def fleet_waves(value):
    try:
        return parse_waves(value)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def fleet_budget(value):
    try:
        return checked_budget(value)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def fleet_plan(hosts, waves, order="inventory"):
    try:
        return plan_waves(list(hosts or []), waves, order)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def fleet_database_name(url):
    try:
        return ConnInfo.parse(str(url)).dbname if url else None
    except OperatorError:
        return None


class FilterModule:
    def filters(self):
        return {"fleet_waves": fleet_waves, "fleet_budget": fleet_budget, "fleet_plan": fleet_plan,
                "fleet_database_name": fleet_database_name}
