"""Action plugin behind the report_files module: write a run's report files on the controller.

Reports are a log of the run kept by the runner (the controller), not managed state on a host, so
they are written here directly: no module round trip per file, and never a change.
"""

from __future__ import annotations

import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(("dir", "files", "mode"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        directory = args.get("dir")
        files = args.get("files") or {}
        mode = int(str(args.get("mode", "0640")), 8)
        if not directory:
            raise AnsibleActionFail("report_files needs 'dir': the report directory.")
        if not isinstance(files, dict):
            raise AnsibleActionFail("report_files 'files' must be a mapping of file name to content.")
        os.makedirs(directory, mode=0o750, exist_ok=True)
        written = []
        for name, content in files.items():
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise AnsibleActionFail(f"report_files: '{name}' is not a plain file name.")
            path = os.path.join(directory, name)
            fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("" if content is None else str(content))
            os.chmod(tmp_path, mode)
            os.replace(tmp_path, path)
            written.append(path)
        result.update(changed=False, dir=directory, written=written)
        return result
