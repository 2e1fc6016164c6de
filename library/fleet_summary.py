#!/usr/bin/python
"""Documentation of the fleet_summary action (the work is done by plugins/action/fleet_summary.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_summary
short_description: Write a fleet run's summary (summary.json and summary.md) on the controller
description:
  - A fleet is one inventory host per database, migrated in waves (C(serial)) under a failure budget per wave
    (C(max_fail_percentage)). This writes which databases migrated, which failed and were rolled back and
    which were never touched, wave by wave with each wave's time, from each database's report.json
    (module_utils/fleet_summary.py).
  - migrate.yml calls it at the start and at the end of every wave, so the summary exists however the waves
    end. Runs as an action plugin on the controller; it never reports a change and writes in check mode too.
version_added: "1.0.0"
options:
  dir:
    description: The fleet run's directory (C(reports/<env>/fleet-<fleet run id>)).
    type: path
    required: true
  fleet:
    description:
      - The run - C(run_id), C(environment), C(operation), C(target_revision), C(waves) (rm_waves),
        C(max_fail_percentage), C(started_at) (epoch seconds), C(awx_job_id), C(awx_workflow_job_id).
    type: dict
    required: true
  hosts:
    description: The play's hosts in order (C(ansible_play_hosts_all)), one per database.
    type: list
    elements: str
    required: true
  databases:
    description: Each host's database name, in the order of O(hosts) (none for a URL that cannot be read).
    type: list
    elements: str
    required: false
    default: []
  waves:
    description: The waves that started, in order, each C({hosts, started_at}).
    type: list
    elements: dict
    required: true
  records:
    description: Each finished database's C({host, outcome, report_dir, finished_at}).
    type: list
    elements: dict
    required: true
author: release-migrations maintainers
attributes:
  check_mode:
    support: full
    details: Writes the summary in check mode too.
"""

EXAMPLES = r"""
- name: Write the fleet summary
  fleet_summary:
    dir: "{{ rm_reports_root }}/{{ rm_environment }}/fleet-{{ hostvars['localhost'].rm_fleet_run.id }}"
    fleet: "{{ hostvars['localhost'].rm_fleet_run }}"
    hosts: [tenant-a, tenant-b]
    databases: [tenant_a, tenant_b]
    waves: "{{ hostvars['localhost'].rm_fleet_run.waves_started }}"
    records: []
"""

RETURN = r"""
written:
  description: The two files written (summary.json, summary.md).
  returned: always
  type: list
  elements: str
status:
  description: C(running) (more waves to come, or a wave in progress), C(stopped) (the failure budget stopped the
    waves) or C(finished).
  returned: always
  type: str
counts:
  description: How many databases are in each state (C(migrated), C(failed-rolled-back), C(never-touched), ...).
  returned: always
  type: dict
"""

if __name__ == "__main__":
    from ansible.module_utils.basic import AnsibleModule

    AnsibleModule(argument_spec={}, supports_check_mode=True).fail_json(
        msg="fleet_summary runs as an action plugin on the controller; call it from a playbook."
    )
