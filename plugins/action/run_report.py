"""Action plugin behind the run_report module: assemble a run's report and write report.json and report.md.

The report is built by module_utils/run_report.py (plain Python, unit-tested) from the facts the roles
left; this plugin only hands them over and writes the files on the controller.
"""

from __future__ import annotations

import json
from pathlib import Path

import ansible.module_utils
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")  # our module_utils, as the modules import them
ansible.module_utils.__path__.extend([] if _UTILS in ansible.module_utils.__path__ else [_UTILS])

from ansible.module_utils.run_report import build_report, render_markdown, write_files  # noqa: E402


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("dir", "facts"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        directory = self._task.args.get("dir")
        facts = self._task.args.get("facts") or {}
        if not directory or not isinstance(facts, dict):
            raise AnsibleActionFail("run_report needs 'dir' (the report directory) and 'facts' (a mapping).")
        report = build_report(json.loads(json.dumps(facts, default=str)))
        try:
            written = write_files(directory, {"report.json": json.dumps(report, indent=2, sort_keys=True) + "\n",
                                              "report.md": render_markdown(report)})
        except (ValueError, OSError) as exc:
            raise AnsibleActionFail(f"run_report: {exc}") from None
        result.update(changed=False, written=written, outcome=report["outcome"],
                      msg=f"{str(report['outcome']).upper()}: report in {directory}/report.md")
        return result
