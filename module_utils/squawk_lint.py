"""The squawk linter (PyPI ``squawk-cli``, the PostgreSQL migration linter) on each revision's offline SQL.

Each revision's SQL is its own file, so each finding names its revision. Revisions that start inside a
transaction (Alembic's one transaction for the whole plan) are linted with ``--assume-in-transaction``.
A finding on a table created earlier in the plan (new and empty), or on the version table, is dropped, and so
is a SET NOT NULL that a validated CHECK earlier in the plan proves. squawk's ignore comments are disarmed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from ansible.module_utils.lint_rules import SQUAWK_EXCLUDED, rule
from ansible.module_utils.lint_walk import Statement, Walk
from ansible.module_utils.operator_error import OperatorError

SQUAWK_TIMEOUT_S = 120


def squawk_binary() -> str:
    """squawk next to this Python (the virtualenv's bin) or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "squawk")
    found = beside if os.access(beside, os.X_OK) else shutil.which("squawk")
    if not found:
        raise OperatorError(
            "The migration linter needs squawk, which is not installed here.",
            "Install the pinned requirements (pip install -r requirements.txt installs squawk-cli).",
        )
    return found


def squawk_version() -> str:
    proc = subprocess.run([squawk_binary(), "--version"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip().rpartition(" ")[2] or "unknown"


def _run(files: list[str], in_transaction: bool, pg_version: str | None) -> list[dict[str, Any]]:
    cmd = [squawk_binary(), "--reporter", "json", "--exclude", ",".join(SQUAWK_EXCLUDED)]
    if pg_version:
        cmd += ["--pg-version", pg_version]
    if in_transaction:
        cmd.append("--assume-in-transaction")
    proc = subprocess.run(cmd + files, capture_output=True, text=True, timeout=SQUAWK_TIMEOUT_S)
    try:
        found = json.loads(proc.stdout or "[]")
    except ValueError:
        found = None
    if proc.returncode not in (0, 1) or not isinstance(found, list):
        raise OperatorError(f"squawk failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[:400]}",
                            "Check the squawk installation (squawk --version).")
    return found


def _statement_at(statements: list[Statement], line: int) -> Statement | None:
    for stmt in statements:
        if stmt.line <= line <= stmt.last_line:
            return stmt
    return None


def _keep(stmt: Statement | None, walk: Walk, name: str) -> bool:
    if stmt is None:
        return True
    if name == "adding-not-nullable-field" and stmt.proven_not_null:
        return False  # a validated CHECK (col IS NOT NULL) earlier in the plan: SET NOT NULL scans nothing
    return not stmt.table_is_new and stmt.table != walk.version_table


# squawk's own "-- squawk-ignore" comments would let a revision switch the linter off by itself; the only
# way through is a reviewed exception (rm_lint_accept), so they are disarmed before squawk reads the SQL.
_IGNORE = re.compile(r"squawk-ignore", re.I)


def disarmed(sql: str) -> str:
    return _IGNORE.sub("squawk-ignore-disarmed-by-release-migrations", sql)


def squawk_findings(walk: Walk, revisions: list[dict[str, Any]], pg_version: str | None = None) -> list[dict]:
    """squawk's findings, each named by revision and statement (syntax errors are ours: pglast reports them)."""
    by_file: dict[str, str] = {}
    found: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rm-lint-") as tmp:
        groups: dict[bool, list[str]] = {True: [], False: []}
        for index, entry in enumerate(revisions):
            if not entry.get("sql"):
                continue
            path = os.path.join(tmp, f"{index:04d}.sql")
            with open(path, "w", encoding="utf-8") as f:
                f.write(disarmed(entry["sql"]))
            by_file[path] = entry["revision"]
            groups[walk.starts_in_transaction.get(entry["revision"], False)].append(path)
        for in_transaction, files in groups.items():
            if files:
                found += _run(files, in_transaction, pg_version)
    out = []
    for item in found:
        name, revision = item.get("rule_name", ""), by_file.get(item.get("file", ""))
        if name in ("syntax-error", "unused-ignore") or revision is None:  # ours: pglast; the disarmed ignores
            continue
        line = int(item.get("line", 0)) + 1  # squawk counts lines from 0
        stmt = _statement_at([s for s in walk.statements if s.revision == revision], line)
        if not _keep(stmt, walk, name):
            continue
        text = " ".join((stmt.text if stmt else "").split())[:200]
        out.append({"revision": revision, "line": stmt.line if stmt else line, "statement": text, "rule": name,
                    "detail": item.get("message", ""), **rule(name, item.get("message", ""), item.get("help", ""))})
    return out
