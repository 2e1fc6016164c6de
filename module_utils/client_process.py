"""Running PostgreSQL client tools (pg_dump, pg_restore, psql): environment, failures, interruption.

The connection reaches a tool only through its environment (ConnInfo.libpq_env); a tool that only
reads a file gets an environment without any connection setting. A failure becomes an OperatorError
with the tool's own words, redacted and shortened to what an operator needs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import redact

# Variables that must not leak into a tool that only reads files (pg_restore --list).
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGOPTIONS")


def offline_env() -> dict[str, str]:
    """Environment for a client tool that must not connect (it only reads a backup file)."""
    return {k: v for k, v in os.environ.items() if k not in _LIBPQ_VARS}


def tool_failure(tool: str, rc: int, stderr: str, secrets: list[str], hint: str) -> OperatorError:
    text = redact((stderr or "").strip(), secrets)
    lines = text.splitlines()
    if len(lines) > 20:
        text = "\n".join(lines[:5] + ["..."] + lines[-14:])
    text = text or "no error output"
    if not text.endswith((".", "!", "?")):
        text += "."
    if tool == "psql" and "invalid command \\restrict" in text:
        hint = ("This plain backup was written by a pg_dump that wraps it in \\restrict (the August 2025 releases "
                "on: 13.22, 14.19, 15.14, 16.10, 17.6, 18); this psql is older and does not know it. Set pg_bin_dir "
                "to client tools of such a release, or restore a custom or directory backup. " + hint)
    return OperatorError(f"{tool} failed (exit code {rc}): {text}", hint, exit_code=rc)


def run_tool(cmd: list[str], env: dict[str, str], secrets: list[str], hint: str) -> str:
    """Run a client tool to completion; return stdout, raise OperatorError (redacted stderr) on failure."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise tool_failure(Path(cmd[0]).name, proc.returncode, proc.stderr, secrets, hint)
    return proc.stdout


@contextlib.contextmanager
def terminate_as_exception():
    """Turn SIGTERM (Ansible's timeout, an operator's kill) and SIGHUP (a lost ssh or kubectl exec session) into
    an exception so cleanup runs (SIGINT already is one)."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    signals = (signal.SIGTERM, signal.SIGHUP)
    try:
        previous = [signal.signal(signum, handler) for signum in signals]
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler_before in zip(signals, previous, strict=True):
            signal.signal(signum, handler_before)
