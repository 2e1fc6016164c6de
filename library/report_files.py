#!/usr/bin/python
"""Documentation of the report_files action (the work is done by plugins/action/report_files.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: report_files
short_description: Write a run's report files on the controller
description:
  - Creates the report directory if needed and writes each file atomically (temporary name, then
    rename). Runs on the controller as an action plugin, so it costs no module round trip.
  - Reports are a log of the run, not managed state; the task never reports a change.
version_added: "1.0.0"
options:
  dir:
    description: The report directory.
    type: path
    required: true
  files:
    description: File name (no directory part) to content.
    type: dict
    required: true
  mode:
    description: Permissions of the files.
    type: str
    default: "0640"
attributes:
  check_mode:
    support: full
    details: Reports are written in check mode too, so a dry run leaves its record.
author: release-migrations maintainers
"""

EXAMPLES = r"""
- name: Save the SQL preview and its lint findings beside the report
  report_files:
    dir: "{{ preflight_result.report_dir }}"
    files:
      preview.sql: "{{ preflight_result.preview_sql }}"
      lint.json: "{{ preview_lint | to_nice_json }}"
"""

RETURN = r"""
written:
  description: Paths written.
  returned: always
  type: list
  elements: str
dir:
  description: The report directory.
  returned: always
  type: str
"""

if __name__ == "__main__":
    from ansible.module_utils.basic import AnsibleModule

    AnsibleModule(argument_spec={}, supports_check_mode=True).fail_json(
        msg="report_files runs as an action plugin on the controller; call it from a playbook."
    )
