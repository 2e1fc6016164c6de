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
    """What the revision's ``downgrade()`` does: ``ok``, ``empty`` (only ``pass``, ``...``, a docstring or a bare
    ``return``), ``raises`` (a statement of its body raises), ``missing``, or ``unknown`` (the file does not
    parse). A merge revision whose upgrade is as empty as its downgrade is ``ok``: there is nothing to undo."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return "unknown"
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if "downgrade" not in functions:
        return "missing"
    body = _real_statements(functions["downgrade"])
    if any(isinstance(n, ast.Raise) for n in body):
        return "raises"
    if body:
        return "ok"
    upgrade = functions.get("upgrade")
    return "ok" if upgrade is not None and not _real_statements(upgrade) else "empty"


def _real_statements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    return [n for n in function.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstring, `...`
            and not isinstance(n, ast.Pass)
            and not (isinstance(n, ast.Return) and (n.value is None or isinstance(n.value, ast.Constant)))]


def revision_files(script, project: Project, revisions: list[str]) -> list[dict[str, Any]]:
    """Each revision's file: where it is (relative to the ini's directory), its sha256, its downgrade."""
    out = []
    for rev in revisions:
        sc = script.get_revision(rev)
        path = sc.path if sc is not None else None
        out.append({
            "revision": rev,
            "sql_file": sql_file_name(rev),
            "py_file": sql_file_name(rev)[:-4] + ".py",
            "description": ((sc.doc or "").strip() if sc is not None else ""),
            "path": os.path.relpath(path, project.home) if path else None,
            "file_sha256": file_sha256(path) if path and os.path.isfile(path) else None,
            "source": _text_of(path),
            "downgrade": downgrade_kind(path) if path else "unknown",
        })
    return out


def _text_of(path: str | None) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except (OSError, TypeError, UnicodeDecodeError):
        return None


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


def _render(project: Project, conn, plan: Plan, *, reverse: bool = False,
            into: tuple[io.StringIO, list[tuple[str, int]]] | None = None) -> tuple[str, list[tuple[str, int]]]:
    """One offline run of the plan (``reverse``: of its way back, target down to the start). ``into`` keeps
    what was written and marked when the run raises half way."""
    from alembic import command

    buf, marks = into or (io.StringIO(), [])
    cfg = build_config(project, conn, output=buf)
    start, end = plan.from_revision, plan.target_revision or "base"
    if reverse:
        start, end = end, start or "base"
    with in_project_home(project), _marking_steps(buf, marks), contextlib.redirect_stdout(sys.stderr):
        if (plan.direction == "up") != reverse:
            command.upgrade(cfg, f"{start}:{end}" if start and start != "base" else end, sql=True)
        else:
            command.downgrade(cfg, f"{start}:{end}", sql=True)
    return buf.getvalue(), marks


def downgrade_sql(project: Project, conn, plan: Plan) -> dict[str, dict[str, Any]]:
    """The way back of an upgrade plan, offline: each pending revision's downgrade SQL, or why there is none
    (a downgrade that raises stops the offline run there; the revisions below it are not rendered)."""
    if plan.direction != "up" or not plan.pending:
        return {}
    buf, marks = io.StringIO(), []
    error = None
    try:
        _render(project, conn, plan, reverse=True, into=(buf, marks))
    except Exception as exc:  # noqa: BLE001 - a raising downgrade(): what rendered before it is kept
        error = error_text(exc)
    text = buf.getvalue()
    out: dict[str, dict[str, Any]] = {}
    cuts = [offset for _, offset in marks[1:]] + [len(text)]
    for (rev, offset), end in zip(marks, cuts, strict=True):
        out[rev] = {"sql": text[offset if out else 0:end], "error": None}
    if error is not None and marks:
        out[marks[-1][0]] = {"sql": None, "error": error}  # the step that was running when it raised
    return out


def _segments(text: str, marks: list[tuple[str, int]], pending: list[str]) -> dict[str, str]:
    """Each revision's part of the text; what precedes the first step (env.py's BEGIN) goes with it."""
    if sorted(rev for rev, _ in marks) != sorted(pending) or not text:
        return {}  # env.py wrote its SQL somewhere else: each revision is pinned to its file
    cuts = [0] + [offset for _, offset in marks[1:]] + [len(text)]
    return {rev: text[cuts[i]:cuts[i + 1]] for i, (rev, _) in enumerate(marks)}


def sql_file_name(revision: str) -> str:
    """The file a revision's SQL is saved as beside the report (a revision id may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", revision).lstrip(".") + ".sql"


def listing_lines(entry: dict[str, Any]) -> str:
    """A revision's lines of the approval record (``sha256sum`` format): its SQL and its file."""
    lines = f"{entry['sql_sha256']}  {entry['sql_file']}\n" if entry.get("pinned_to") == "sql and file" else ""
    return lines + f"{entry['file_sha256']}  {entry['py_file']}\n"


def approval_listing(revisions: list[dict[str, Any]]) -> str:
    """The plan's approval record in ``sha256sum`` format (``SHA256SUMS`` beside the saved SQL and revision
    files), in the order the revisions run. Its own sha256 is the plan's ``sql_sha256``."""
    return "".join(listing_lines(e) for e in revisions)


def _pin(entry: dict[str, Any], part: str | None, again: str | None, why_not: str | None) -> None:
    """What the approval of one revision pins: its SQL and its file (the code that runs online may differ from
    what renders offline), or only its file when its SQL cannot be rendered or is not the same twice."""
    entry["sql"] = part
    entry["sql_sha256"] = sha256_text(part) if part is not None else None
    if part is not None and (again is None or again == part):
        entry["pinned_to"] = "sql and file"
    else:
        why = "its SQL differs between two renders (clock or random values)" if part is not None else why_not
        entry["pinned_to"] = f"file: {why or 'its SQL could not be rendered offline'}"
    entry["approval_sha256"] = sha256_text(listing_lines(entry))


def _render_each(project: Project, conn, plan: Plan, script) -> tuple[dict[str, str], dict[str, str]]:
    """Each pending revision rendered on its own (from its first parent), for plans Alembic cannot render in one
    offline run (several heads) and around a revision that cannot render: ({rev: sql}, {rev: why not})."""
    parts, errors = {}, {}
    for rev in plan.pending:
        sc = script.get_revision(rev)
        parents = [p for p in (sc.down_revision if isinstance(sc.down_revision, tuple | list)
                               else [sc.down_revision]) if p]
        one = Plan(tuple(parents[:1]), plan.heads, (rev,), "up", [rev])
        try:
            text, marks = _render(project, conn, one)
        except Exception as exc:  # noqa: BLE001 - named per revision
            errors[rev] = f"its SQL could not be rendered offline: {error_text(exc)}"
            continue
        at = [i for i, (r, _) in enumerate(marks) if r == rev]
        if at:  # a merge renders the other branch first: only this revision's own step is kept
            i = at[0]
            parts[rev] = text[0 if i == 0 else marks[i][1]:marks[i + 1][1] if i + 1 < len(marks) else len(text)]
    return parts, errors


def _rendered(project: Project, conn, plan: Plan, script, twice: bool) -> tuple[dict, dict, dict, str, str | None]:
    """(SQL per revision, a second render, why not per revision, the plan's text, the plan's error)."""
    several = len(plan.current) > 1 or len(plan.target) > 1
    if not several:
        try:
            text, marks = _render(project, conn, plan)
            parts = _segments(text, marks, list(plan.pending))
            again = _segments(*_render(project, conn, plan), list(plan.pending)) if twice else {}
            return parts, again, {}, text, None
        except Exception as exc:  # noqa: BLE001 - a revision that reads the database: the others still render
            error = f"Offline SQL could not be rendered: {error_text(exc)}"
    else:
        error = None
    parts, errors = _render_each(project, conn, plan, script)
    again = _render_each(project, conn, plan, script)[0] if twice else {}
    text = "".join(parts.get(rev) or "" for rev in plan.pending)
    return parts, again, errors, text, error


def render_plan(project: Project, conn, plan: Plan, script, *, twice: bool = False,
                way_back: bool = False) -> dict[str, Any]:
    """The plan's offline SQL per revision and the sha256 an approval pins (see the module docstring).

    ``twice`` renders a second time: a revision whose SQL is not the same both times (it writes the clock or
    a random value into its SQL) is pinned to its file only, so an approval never depends on luck.
    ``way_back`` adds each revision's offline downgrade SQL (``downgrade_sql``, ``downgrade_error``)."""
    revisions = revision_files(script, project, list(plan.pending))
    if not plan.pending:
        return {"sql": "", "sql_sha256": None, "revisions": []}
    parts, again, errors, text, error = _rendered(project, conn, plan, script, twice)
    for entry in revisions:
        rev = entry["revision"]
        _pin(entry, parts.get(rev), again.get(rev) if twice else None, errors.get(rev) or error)
    result: dict[str, Any] = {"sql": text, "revisions": revisions, "sha256sums": approval_listing(revisions),
                              "sql_sha256": sha256_text(approval_listing(revisions))}
    missing = [e["revision"] for e in revisions if e["sql"] is None]
    if missing:
        result["sql_error"] = (f"The offline SQL of {', '.join(missing)} could not be rendered"
                               + (f" ({error})" if error else "") + ": not shown, not linted, pinned to the files")
    if way_back:
        down = downgrade_sql(project, conn, plan) if len(plan.target) <= 1 and len(plan.current) <= 1 else {}
        for entry in revisions:
            found = down.get(entry["revision"], {"sql": None, "error": "not rendered"})
            entry.update(downgrade_sql=found["sql"], downgrade_error=found["error"])
    return result


def differing(now: list[dict[str, Any]], expected: dict[str, str],
              files: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The revisions whose approval hash is not the expected one ({revision: approval_sha256}), each with why:
    its file changed, or (with the expected ``files``) only its SQL did."""
    out = []
    for entry in now:
        want = expected.get(entry["revision"])
        if want == entry["approval_sha256"]:
            continue
        before = (files or {}).get(entry["revision"])
        why = ("its file changed" if before and before != entry["file_sha256"]
               else "its SQL changed while its file did not (it depends on the clock, env.py or another module)"
               if before else "its SQL or its file changed")
        out.append({"revision": entry["revision"], "path": entry["path"], "approved": want,
                    "now": entry["approval_sha256"], "why": why})
    return out
