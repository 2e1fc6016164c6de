"""Action plugin behind the fleet_summary module: write a fleet run's summary.json and summary.md.

The summary is built by module_utils/fleet_summary.py (plain Python, unit-tested) from the waves that
started, each finished database's record and its report.json; this plugin hands them over and writes the
files on the controller, at the start and at the end of every wave.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ansible.module_utils
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")  # our module_utils, as the modules import them
ansible.module_utils.__path__.extend([] if _UTILS in ansible.module_utils.__path__ else [_UTILS])

from ansible.module_utils.fleet_summary import build_summary, load_reports, render_markdown  # noqa: E402
from ansible.module_utils.run_report import write_files  # noqa: E402


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("dir", "fleet", "hosts", "databases", "waves", "records"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = json.loads(json.dumps(self._task.args, default=str))
        directory, fleet = args.get("dir"), args.get("fleet") or {}
        names, databases = args.get("hosts") or [], args.get("databases") or []
        waves, records = args.get("waves") or [], args.get("records") or []
        lists = all(isinstance(x, list) for x in (names, databases, waves, records))
        if not directory or not isinstance(fleet, dict) or not lists:
            raise AnsibleActionFail("fleet_summary needs 'dir', 'fleet' (a mapping) and 'hosts', 'databases', 'waves', "
                                    "'records' (lists).")
        hosts = [{"host": name, "database": databases[i] if i < len(databases) else None}
                 for i, name in enumerate(names)]
        try:
            summary = build_summary({**fleet, "dir": directory}, hosts, waves, records, load_reports(records),
                                    time.time())
            written = write_files(directory, {"summary.json": json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                              "summary.md": render_markdown(summary)})
        except (ValueError, OSError) as exc:
            raise AnsibleActionFail(f"fleet_summary: {exc}") from None
        result.update(changed=False, written=written, status=summary["status"], counts=summary["counts"],
                      msg=f"FLEET {str(summary['status']).upper()} ({summary['status_reason']}): "
                          f"{directory}/summary.md")
        return result
