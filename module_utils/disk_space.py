"""Free space on the filesystem that will hold a backup (the preflight's free-space gate)."""

from __future__ import annotations

import os
import shutil


def free_space(path: str) -> dict:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    probe = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return {"path": path, "free_bytes": shutil.disk_usage(probe).free}
