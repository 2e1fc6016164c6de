#!/usr/bin/python
"""Documentation of the run_report action (the work is done by plugins/action/run_report.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: run_report
short_description: Assemble a run's report and write report.json and report.md on the controller
description:
  - Builds the report of a lifecycle run from the facts the roles left (module_utils/run_report.py) and
    writes C(report.json) (for machines) and C(report.md) (for people) atomically into O(dir).
  - Runs as an action plugin on the controller; a report is a log of the run, so the task never reports
    a change, and it writes in check mode too (a dry run leaves its record).
version_added: "1.0.0"
options:
  dir:
    description: The run's report directory.
    type: path
    required: true
  facts:
    description:
      - The run's facts - C(outcome), C(environment), C(finished_at), the roles' results (C(preflight),
        C(preview), C(backup), C(apply), C(verify), C(rollback), C(restore), C(drill)), C(failure),
        C(writers_error), C(kubernetes), C(awx_job_id), C(app_pod_log).
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    details: Writes the report in check mode too.
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Write report.json and report.md
  run_report:
    dir: "{{ preflight_result.report_dir }}"
    facts:
      outcome: "{{ rm_outcome }}"
      environment: "{{ rm_environment }}"
      preflight: "{{ preflight_result }}"
      backup: "{{ backup_result | default(none) }}"
"""

RETURN = r"""
outcome:
  description: The outcome written into the report.
  returned: always
  type: str
written:
  description: The two files written (report.json, report.md).
  returned: always
  type: list
  elements: str
"""

if __name__ == "__main__":
    from ansible.module_utils.basic import AnsibleModule

    AnsibleModule(argument_spec={}, supports_check_mode=True).fail_json(
        msg="run_report runs as an action plugin on the controller; call it from a playbook."
    )
