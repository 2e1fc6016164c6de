"""Action plugin behind the report_files module: write a run's report files on the controller.

Reports are a log of the run kept by the runner (the controller), not managed state on a host, so
they are written here directly: no module round trip per file, and never a change.
"""

from __future__ import annotations

from pathlib import Path

import ansible.module_utils
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")  # our module_utils, as the modules import them
ansible.module_utils.__path__.extend([] if _UTILS in ansible.module_utils.__path__ else [_UTILS])

from ansible.module_utils.run_report import write_files  # noqa: E402


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("dir", "files", "mode"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        directory = args.get("dir")
        files = args.get("files") or {}
        if not directory:
            raise AnsibleActionFail("report_files needs 'dir': the report directory.")
        if not isinstance(files, dict):
            raise AnsibleActionFail("report_files 'files' must be a mapping of file name to content.")
        try:
            written = write_files(directory, files, int(str(args.get("mode", "0640")), 8))
        except (ValueError, OSError) as exc:
            raise AnsibleActionFail(f"report_files: {exc}") from None
        result.update(changed=False, dir=directory, written=written)
        return result
