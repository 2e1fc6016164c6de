"""Alembic as a declarative, lock-safe step: plan, preview and apply a project's revisions on PostgreSQL.

A plan runs as Alembic's own ``command.upgrade``/``command.downgrade`` runs it: one run of the
project's env.py, which opens its own connection with its own transaction settings (one transaction
for the whole plan, or one per revision when env.py asks for ``transaction_per_migration``). Around
that one run we keep what the runbook lacks:

- an advisory lock on our own session, so two runs never migrate one database at once, and a plan
  made again under the lock (someone may have migrated while we waited);
- ``lock_timeout``/``statement_timeout`` on every connection the run opens, and a bounded number of
  retries when a statement times out waiting for a lock (the run continues from where it stopped);
- each revision applied, with its duration: Alembic's ``on_version_apply`` hook says when a revision
  finished, the run's step iterator says when the next one started (so a failure names the revision
  that failed, and a failure before any revision names env.py);
- the revision the database is really left at, read back from the version table: a one-transaction
  plan that fails is back where it started, a per-revision plan is at the last good revision.
"""

from __future__ import annotations

import contextlib
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.alembic_offline import differing, render_plan
from ansible.module_utils.alembic_plan import (
    Plan,
    Project,
    ancestry,
    build_config,
    check_direction,
    error_text,
    in_project_home,
    plan_for,
    resolve_target,
    script_directory,
)
from ansible.module_utils.alembic_session import (
    advisory_lock,
    checked_settings,
    current_revisions,
    is_lock_timeout,
    nolock,
    session_settings,
)
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo, ParsedOnce, redact


@dataclass
class MigrationRequest(ParsedOnce):
    url: str
    config: str | None = None
    script_location: str | None = None
    revision: str = "head"
    allow_downgrade: bool = False
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    lock_retries: int = 3
    lock_retry_delay: float = 1.0
    advisory_lock: bool = True
    advisory_lock_wait: float = 0.0
    version_table: str = "alembic_version"
    x_arguments: dict[str, str] = field(default_factory=dict)
    create_database: bool = False
    # The plan the run was previewed and approved with; a different plan made under the lock is refused.
    expected_pending: list[str] | None = None
    # No revision starts after this moment (ISO 8601, UTC): the end of the maintenance window.
    not_after: str | None = None
    # After the run, compare the app's models with the database (Alembic's `alembic check`).
    compare_models: bool = False
    # {revision: approval sha256} as previewed (and approved): under the lock the SQL is rendered again and a
    # revision whose SQL (or file) differs is refused before anything runs.
    expected_sql: dict[str, str] | None = None
    expected_files: dict[str, str] | None = None  # {revision: file sha256} as previewed: says what changed
    # Keep each applied revision file's sha256 with the database (the version table's comment).
    record_checksums: bool = True
    # Applied revisions whose edited files were reviewed and accepted: their new checksum is recorded.
    accept_edited: list[str] = field(default_factory=list)
    conn: ConnInfo | None = field(default=None, repr=False)  # the module's url, parsed once at its entry
    project: Project = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.project = Project(self.config, self.script_location, self.version_table, dict(self.x_arguments))
        self.settings = checked_settings(self.lock_timeout, self.statement_timeout)


# --- planning -----------------------------------------------------------------------------------


def inspect_plan(req: MigrationRequest, database_missing: bool = False) -> tuple[Plan, Any]:
    script = script_directory(build_config(req.project, req.conn))
    current = () if database_missing else current_revisions(req.conn, req.version_table)
    target = resolve_target(script, req.revision, current)
    return plan_for(script, current, target), script


# --- one run of the project's env.py ---------------------------------------------------------------


class StepRecorder:
    """What one run of env.py did, revision by revision (see the module docstring)."""

    def __init__(self, script) -> None:
        self.script = script
        self.started_at = time.monotonic()
        self.running: tuple[str, float] | None = None
        self.finished: list[dict[str, Any]] = []

    def starting(self, step) -> None:
        revision = getattr(getattr(step, "revision", None), "revision", None)
        if revision:
            self.running = (revision, time.monotonic())

    def applied(self, *, step, **_kw) -> None:
        revision = getattr(step, "up_revision_id", None)  # the revision added (up) or removed (down)
        began = self.running[1] if self.running and self.running[0] == revision else self.started_at
        sc = self.script.get_revision(revision) if revision else None
        self.finished.append({"revision": revision, "description": (sc.doc or "").strip() if sc else "",
                              "direction": "up" if step.is_upgrade else "down",
                              "duration_s": round(time.monotonic() - began, 3), "lock_retries": 0})
        self.running = None
        self.started_at = time.monotonic()


@contextmanager
def recording(recorder: StepRecorder):
    """Attach ``recorder`` to every MigrationContext that runs migrations while inside (env.py untouched)."""
    from alembic.runtime.migration import MigrationContext

    original = MigrationContext.run_migrations

    def run_migrations(self, **kw):
        if not getattr(self, "as_sql", False):
            steps = getattr(self, "_migrations_fn", None)
            if steps is not None:
                def traced(heads, ctx):
                    for step in steps(heads, ctx):
                        recorder.starting(step)
                        yield step

                self._migrations_fn = traced
            self.on_version_apply_callbacks = (*tuple(getattr(self, "on_version_apply_callbacks", ()) or ()),
                                               recorder.applied)
        return original(self, **kw)

    MigrationContext.run_migrations = run_migrations
    try:
        yield recorder
    finally:
        MigrationContext.run_migrations = original


def _alembic_run(req: MigrationRequest, plan: Plan, recorder: StepRecorder) -> None:
    """``alembic upgrade TARGET`` (or downgrade) as the project's own command would run it."""
    from alembic import command

    cfg = build_config(req.project, req.conn)
    # Alembic takes one target per command: every head is 'heads'; other sets run one target after another.
    if len(plan.target) > 1 and set(plan.target) == set(plan.heads):
        targets = ["heads"]
    else:
        targets = list(plan.target) or ["base"]
    # What env.py or a revision prints goes to stderr: the module's stdout is its JSON result.
    with in_project_home(req.project), session_settings(req.settings), recording(recorder), \
            contextlib.redirect_stdout(sys.stderr):
        for target in targets:
            if plan.direction == "up":
                command.upgrade(cfg, target)
            else:
                command.downgrade(cfg, target)


def _apply(req: MigrationRequest, plan: Plan, script) -> tuple[list[dict[str, Any]], int]:
    """Run the plan; lock timeouts are retried (the run continues where the database stopped)."""
    steps: list[dict[str, Any]] = []
    retries: dict[str, int] = {}
    while True:
        recorder = StepRecorder(script)
        try:
            _alembic_run(req, plan, recorder)
            steps += recorder.finished
            return steps, sum(retries.values())
        except Exception as exc:  # noqa: BLE001 - anything from env.py or a revision: explained below
            steps += recorder.finished
            failed = recorder.running[0] if recorder.running else None
            if failed is None and recorder.finished:  # every revision ran; the run's commit (or env.py) failed
                failed = recorder.finished[-1]["revision"]
            if is_lock_timeout(exc) and failed and retries.get(failed, 0) < req.lock_retries:
                retries[failed] = retries.get(failed, 0) + 1
                steps = _kept(script, plan, _revision_left(req), steps)  # a rolled-back run kept nothing
                time.sleep(req.lock_retry_delay)
                plan, script = inspect_plan(req)
                if not plan.pending:
                    return steps, sum(retries.values())
                continue
            raise _failure(req, plan, script, exc, steps, failed, retries) from None


def _failure(req: MigrationRequest, plan: Plan, script, exc: BaseException, steps: list[dict[str, Any]],
             failed: str | None, retries: dict[str, int]) -> OperatorError:
    """Where the database really is after a failed run, and what the operator should know."""
    left = _revision_left(req)
    kept = _kept(script, plan, left, steps)
    for step in kept:
        step["lock_retries"] = retries.get(step["revision"], 0)
    rolled_back = [s["revision"] for s in steps if s not in kept]
    details = {"failed_revision": failed, "revision_left": ",".join(left) if left is not None else "unknown",
               "applied": [s["revision"] for s in kept], "steps": kept, "rolled_back": rolled_back,
               "lock_retries_used": sum(retries.values()), "from_revision": plan.from_revision}
    where = (",".join(left) or "base") if left is not None else "unknown (the connection was lost; run check mode)"
    if failed is None and type(exc).__name__ == "CommandError":
        return OperatorError(
            f"Alembic refused the run before any revision ran: {error_text(exc)}. The database is left at "
            f"revision {where}.",
            "Check the target revision and the project's scripts (`alembic history`); nothing was applied.",
            **details,
        )
    if failed is None:
        return OperatorError(
            f"The project's env.py failed before any revision ran: {type(exc).__name__}: {error_text(exc)}. "
            f"The database is left at revision {where}.",
            "Fix env.py or the settings it reads (environment variables, the ini, its imports); nothing was "
            "applied. Run `alembic current` with the project's own command to see the same error.",
            **details,
        )
    lock = (f" It timed out waiting for a lock {retries.get(failed, 0) + 1} time(s) (lock_timeout "
            f"{req.lock_timeout}): a long transaction holds the table; retry when it is gone."
            if is_lock_timeout(exc) else "")
    undone = (f" The run's transaction was rolled back, revisions {', '.join(rolled_back)} with it."
              if rolled_back else "")
    return OperatorError(
        f"Revision {failed} failed ({plan.direction}grade): {error_text(exc)}. "
        f"The database is left at revision {where}.{undone}{lock}",
        "Fix the migration and run again; the revisions before it are applied and recorded."
        if kept else "Fix the migration and run again; nothing was applied.",
        **details,
    )


def _revision_left(req: MigrationRequest) -> tuple[str, ...] | None:
    try:
        return current_revisions(req.conn, req.version_table)
    except Exception:  # noqa: BLE001 - the server may be gone; "unknown" is the honest answer
        return None


def _kept(script, plan: Plan, left: tuple[str, ...] | None, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps whose effect stayed, judged by the version table (the truth), not by what ran."""
    if left is None:
        return steps
    now, start = ancestry(script, left), ancestry(script, plan.current)
    if plan.direction == "up":
        return [s for s in steps if s["revision"] in now and s["revision"] not in start]
    return [s for s in steps if s["revision"] not in now and s["revision"] in start]


# --- the module's request -------------------------------------------------------------------------


def _plan_result(plan: Plan) -> dict[str, Any]:
    return {
        "from_revision": plan.from_revision, "target_revision": plan.target_revision, "direction": plan.direction,
        "pending": list(plan.pending), "heads": list(plan.heads), "current": list(plan.current), "applied": [],
        "steps": [], "lock_retries_used": 0, "sql": "", "sql_sha256": None, "revisions": [],
    }


def run(req: MigrationRequest, *, check: bool = False, sql_only: bool = False) -> dict[str, Any]:
    """Plan, and unless check/sql_only, apply. Returns the module's result (not yet redacted)."""
    started = time.monotonic()
    created = False
    if req.create_database:
        from ansible.module_utils.scratch_database import ensure_database

        created = ensure_database(req.conn, True, check=check or sql_only)
    result = _preview(req, created, sql_only) if check or sql_only else _migrate(req, created)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _preview(req: MigrationRequest, created: bool, sql_only: bool) -> dict[str, Any]:
    """What would run: the plan, its SQL per revision (rendered twice, see alembic_offline), the checksums."""
    plan, script = inspect_plan(req, database_missing=created)
    check_direction(plan, req.allow_downgrade, req.revision)
    result = {**_plan_result(plan), "database_created": created}
    result.update(render_plan(req.project, req.conn, plan, script, twice=True, way_back=True))
    _check_expected_sql(req, result["revisions"])
    if not sql_only and not created:
        result["checksums"] = checksums_on_record(req, script, plan.current)
    if req.compare_models and not sql_only:
        result["models"] = _models(req, at_target=not plan.pending)
    result.update(changed=(bool(plan.pending) or created) and not sql_only, to_revision=plan.from_revision)
    return result


def _migrate(req: MigrationRequest, created: bool) -> dict[str, Any]:
    lock = advisory_lock(req.conn, req.version_table, req.advisory_lock_wait) if req.advisory_lock else nolock()
    with lock:
        # Someone may have migrated while we waited for the lock: plan again under it.
        plan, script = inspect_plan(req)
        check_direction(plan, req.allow_downgrade, req.revision)
        _check_expected(req, plan)
        _check_deadline(req, plan)
        result = {**_plan_result(plan), "database_created": created}
        if plan.pending and req.expected_sql is not None:
            _check_expected_sql(req, render_plan(req.project, req.conn, plan, script)["revisions"])
        try:
            steps, retries = _apply(req, plan, script) if plan.pending else ([], 0)
        except OperatorError as failure:
            failure.details["checksums"] = record_checksums(req, script, failure.details.get("applied") or [])
            raise
        result["checksums"] = record_checksums(req, script, [s["revision"] for s in steps])
    after = current_revisions(req.conn, req.version_table)
    if plan.pending and set(after) != set(plan.target):
        raise OperatorError(
            f"The run finished, but the database named by url is at {','.join(after) or 'base'}, not at the target "
            f"{plan.target_revision or 'base'}.",
            "The project's env.py probably connects to another database (its own setting or environment variable "
            "instead of sqlalchemy.url): point url and the env at the same database.",
            revision_left=",".join(after) or None, applied=[s["revision"] for s in steps], steps=steps,
        )
    result.update(changed=bool(steps) or created or bool(result["checksums"].get("written")),
                  to_revision=",".join(after) or None, current=list(after),
                  applied=[s["revision"] for s in steps], steps=steps, lock_retries_used=retries)
    if req.compare_models:
        result["models"] = _models(req, at_target=True)
    return result


def _models(req: MigrationRequest, at_target: bool) -> dict[str, Any]:
    from ansible.module_utils.alembic_models import compare_models

    if not at_target:
        return {"checked": False, "diffs": [], "reason": "not checked: the database is not at the target yet"}
    with in_project_home(req.project), contextlib.redirect_stdout(sys.stderr):
        return compare_models(req.project, req.conn)


def _check_expected(req: MigrationRequest, plan: Plan) -> None:
    """Under the lock, the plan must be the one previewed (or empty: someone else did the work)."""
    if req.expected_pending is None or not plan.pending or list(plan.pending) == list(req.expected_pending):
        return
    raise OperatorError(
        f"The database moved while this run waited: it is now at {plan.from_revision or 'base'} and reaching "
        f"{plan.target_revision or 'base'} would run {plan.direction} {', '.join(plan.pending)}, not the previewed "
        f"{', '.join(req.expected_pending) or 'nothing'}. Nothing was changed.",
        "Run again: a new run previews (and, in production, is approved for) what it will apply.",
        pending=plan.pending, expected_pending=list(req.expected_pending),
    )


def _check_expected_sql(req: MigrationRequest, revisions: list[dict[str, Any]]) -> None:
    """The SQL about to run must be the SQL that was previewed (and approved)."""
    if req.expected_sql is None:
        return
    changed = differing(revisions, req.expected_sql, req.expected_files)
    if not changed:
        return
    named = "; ".join(f"{c['revision']} ({c['path']}): {c['why']} (previewed {str(c['approved'])[:12]}, now "
                      f"{c['now'][:12]})" for c in changed)
    raise OperatorError(
        f"{len(changed)} revision(s) would not run what was previewed and approved: {named}. Nothing was changed.",
        "Review the change, run the preview again (a dry run prints the new sha256) and have that approved.",
        sql_differs=changed,
    )


def checksums_on_record(req: MigrationRequest, script, current: tuple[str, ...]) -> dict[str, Any]:
    """The applied revisions' files against the checksums kept with the database (read-only)."""
    from ansible.module_utils.db_errors import explained
    from ansible.module_utils.revision_checksums import applied_files, compare, read_recorded

    conn = req.conn.connect()
    try:
        with explained("Reading the revision checksums"), conn.cursor() as cur:
            found = read_recorded(cur, req.version_table)
    finally:
        conn.close()
    return compare(applied_files(script, req.project, current), found[1] if found else {})


def record_checksums(req: MigrationRequest, script, applied_now: list[str]) -> dict[str, Any]:
    """Keep the applied revisions' checksums with the database; a failure to write them is reported, never
    raised (the migration itself succeeded or failed on its own)."""
    from ansible.module_utils.pg_catalog import read_revisions
    from ansible.module_utils.revision_checksums import applied_files, compare, read_recorded, updated, write_recorded

    if not req.record_checksums:
        return {"written": False, "reason": "record_checksums is off"}
    try:
        conn = req.conn.connect()
    except Exception as exc:  # noqa: BLE001 - reported in the result
        return {"written": False, "reason": f"cannot connect: {error_text(exc)}"}
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")
            found = read_recorded(cur, req.version_table)
            if found is None:
                return {"written": False, "reason": "no version table"}
            own, recorded = found
            files = applied_files(script, req.project, tuple(read_revisions(cur, req.version_table)))
            keep, changes = updated(files, recorded, applied_now, req.accept_edited)
            if keep != recorded:
                write_recorded(cur, req.version_table, own, keep)
        conn.commit()
        return {"written": keep != recorded, **changes, **compare(files, keep)}
    except Exception as exc:  # noqa: BLE001 - e.g. not the version table's owner: reported in the result
        conn.rollback()
        return {"written": False, "reason": f"could not write the checksums: {error_text(exc)}"}
    finally:
        conn.close()


def _check_deadline(req: MigrationRequest, plan: Plan) -> None:
    if not req.not_after or not plan.pending:
        return
    from datetime import UTC, datetime

    try:
        deadline = datetime.fromisoformat(req.not_after.replace("Z", "+00:00"))
    except ValueError:
        raise OperatorError(f"not_after '{req.not_after}' is not an ISO 8601 time.",
                            "Write it as 2026-11-28T05:00:00Z.") from None
    deadline = deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)
    if datetime.now(UTC) >= deadline:
        raise OperatorError(
            f"It is past {deadline:%Y-%m-%d %H:%M} UTC, the end of the maintenance window (not_after), and "
            f"nothing has started yet. Nothing was changed.",
            "Run again inside the next maintenance window.",
        )


def safe_result(result: dict[str, Any], conn: ConnInfo) -> dict[str, Any]:
    out = redact(result, conn.secrets)
    out["url"] = conn.masked
    return out


