"""The offline SQL of a plan, revision by revision, and the sha256 an approval pins.

One offline run of the project's env.py (``alembic upgrade A:B --sql``) renders the whole plan; the
run's step iterator marks where each revision's SQL starts in the output, so each pending revision
gets exactly its own statements (with Alembic's BEGIN/COMMIT and version-table update around them).

Each revision's approval hash is the sha256 of its SQL. The plan's ``sql_sha256`` is the sha256 of the
plan's listing in ``sha256sum`` format (``<sha256>  <revision>.sql`` per revision, in the order they run),
so anyone can check an approval by hand: the preview saves each revision's SQL and the listing
(``SHA256SUMS``) beside the report, and ``sha256sum -c SHA256SUMS; sha256sum SHA256SUMS`` does it.
A revision whose SQL cannot be rendered offline (it reads the database while it runs) or is not the same
twice (it writes the clock into its SQL) is pinned to its file's bytes instead (``pinned_to`` says which
and why).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import os
import re
import sys
from contextlib import contextmanager
from typing import Any

from ansible.module_utils.alembic_plan import Plan, Project, build_config, error_text, in_project_home


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def downgrade_kind(path: str) -> str:
    """What the revision's ``downgrade()`` does: ``ok``, ``empty`` (only ``pass``, ``...`` or a docstring),
    ``raises`` (its first real statement raises), ``missing``, or ``unknown`` (the file does not parse)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return "unknown"
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "downgrade"]
    if not found:
        return "missing"
    body = [n for n in found[-1].body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstring, `...`
            and not isinstance(n, ast.Pass)]
    if not body:
        return "empty"
    return "raises" if isinstance(body[0], ast.Raise) else "ok"


def revision_files(script, project: Project, revisions: list[str]) -> list[dict[str, Any]]:
    """Each revision's file: where it is (relative to the ini's directory), its sha256, its downgrade."""
    out = []
    for rev in revisions:
        sc = script.get_revision(rev)
        path = sc.path if sc is not None else None
        out.append({
            "revision": rev,
            "sql_file": sql_file_name(rev),
            "description": ((sc.doc or "").strip() if sc is not None else ""),
            "path": os.path.relpath(path, project.home) if path else None,
            "file_sha256": file_sha256(path) if path and os.path.isfile(path) else None,
            "downgrade": downgrade_kind(path) if path else "unknown",
        })
    return out


@contextmanager
def _marking_steps(buf: io.StringIO, marks: list[tuple[str, int]]):
    """Record (revision, offset in ``buf``) as each step of an offline run starts."""
    from alembic.runtime.migration import MigrationContext

    original = MigrationContext.run_migrations

    def run_migrations(self, **kw):
        steps = getattr(self, "_migrations_fn", None)
        if getattr(self, "as_sql", False) and steps is not None:
            def marked(heads, ctx):
                for step in steps(heads, ctx):
                    revision = getattr(getattr(step, "revision", None), "revision", None)
                    marks.append((revision, buf.tell()))
                    yield step

            self._migrations_fn = marked
        return original(self, **kw)

    MigrationContext.run_migrations = run_migrations
    try:
        yield
    finally:
        MigrationContext.run_migrations = original


def _render(project: Project, conn, plan: Plan) -> tuple[str, list[tuple[str, int]]]:
    from alembic import command

    buf = io.StringIO()
    marks: list[tuple[str, int]] = []
    cfg = build_config(project, conn, output=buf)
    start, end = plan.from_revision, plan.target_revision or "base"
    with in_project_home(project), _marking_steps(buf, marks), contextlib.redirect_stdout(sys.stderr):
        if plan.direction == "up":
            command.upgrade(cfg, f"{start}:{end}" if start else end, sql=True)
        else:
            command.downgrade(cfg, f"{start}:{end}", sql=True)
    return buf.getvalue(), marks


def _segments(text: str, marks: list[tuple[str, int]], pending: list[str]) -> dict[str, str]:
    """Each revision's part of the text; what precedes the first step (env.py's BEGIN) goes with it."""
    if sorted(rev for rev, _ in marks) != sorted(pending) or not text:
        return {}  # env.py wrote its SQL somewhere else: each revision is pinned to its file
    cuts = [0] + [offset for _, offset in marks[1:]] + [len(text)]
    return {rev: text[cuts[i]:cuts[i + 1]] for i, (rev, _) in enumerate(marks)}


def sql_file_name(revision: str) -> str:
    """The file a revision's SQL is saved as beside the report (a revision id may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", revision).lstrip(".") + ".sql"


def approval_listing(revisions: list[dict[str, Any]]) -> str:
    """The plan's approval record in ``sha256sum`` format (``SHA256SUMS`` beside the saved SQL files): one line
    per revision, in the order they run. Its own sha256 is the plan's ``sql_sha256``."""
    return "".join(f"{e['approval_sha256']}  {e['sql_file']}\n" for e in revisions)


def _pin(entry: dict[str, Any], part: str | None, again: str | None, rendered: bool) -> None:
    """What the approval of one revision pins: its SQL, or its file when the SQL is not the same twice."""
    entry["sql"] = part
    entry["sql_sha256"] = sha256_text(part) if part is not None else None
    if part is not None and (again is None or again == part):
        entry.update(approval_sha256=entry["sql_sha256"], pinned_to="sql")
        return
    why = ("its SQL differs between two renders (clock or random values)" if part is not None
           else "the plan's SQL could not be rendered offline" if not rendered
           else "its SQL could not be told apart from the plan's")
    entry.update(approval_sha256=entry["file_sha256"], pinned_to=f"file: {why}")


def render_plan(project: Project, conn, plan: Plan, script, *, twice: bool = False) -> dict[str, Any]:
    """The plan's offline SQL per revision and the sha256 an approval pins (see the module docstring).

    ``twice`` renders a second time: a revision whose SQL is not the same both times (it writes the clock or
    a random value into its SQL) is pinned to its file instead, so an approval never depends on luck."""
    revisions = revision_files(script, project, list(plan.pending))
    if not plan.pending:
        return {"sql": "", "sql_sha256": None, "revisions": []}
    result: dict[str, Any] = {"sql": ""}
    try:
        text, marks = _render(project, conn, plan)
        parts = _segments(text, marks, list(plan.pending))
        again = _segments(*_render(project, conn, plan), list(plan.pending)) if twice else {}
        result["sql"] = text
    except Exception as exc:  # noqa: BLE001 - a revision that reads the database cannot render offline
        parts, again = {}, {}
        result["sql_error"] = f"Offline SQL could not be rendered: {error_text(exc)}"
    for entry in revisions:
        _pin(entry, parts.get(entry["revision"]), again.get(entry["revision"]) if twice else None,
             "sql_error" not in result)
    result.update(revisions=revisions, sql_sha256=sha256_text(approval_listing(revisions)),
                  sha256sums=approval_listing(revisions))
    return result


def differing(now: list[dict[str, Any]], expected: dict[str, str]) -> list[dict[str, Any]]:
    """The revisions whose approval hash is not the expected one ({revision: approval_sha256}); a revision
    approved by its file is compared by its file."""
    out = []
    for entry in now:
        want = expected.get(entry["revision"])
        have = entry["file_sha256"] if want == entry["file_sha256"] else entry["approval_sha256"]
        if want != have:
            out.append({"revision": entry["revision"], "path": entry["path"], "approved": want, "now": have})
    return out
