"""A rehearsal of a plan on a scratch database: one revision at a time up, the app's queries, the way back.

The scratch database is taken to the live database's starting revision, then up the pending revisions one at
a time. After each, the schema is recorded and the app's queries are prepared: the first revision after which
a query no longer prepares is the one that breaks the app version still running. At the target the app's
models are compared (``alembic check``). Then each revision's downgrade is walked, from the top, and the
schema it leaves is compared with the one recorded on the way up: a downgrade that fails or does not give the
schema back makes its revision irreversible. Finally the scratch database goes back up to the target (the
verify step compares the live database with it).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.app_queries import prepare_all, shown
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo, ParsedOnce

NOT_PROVEN = "not proven"


@dataclass
class RehearsalRequest(ParsedOnce):
    url: str  # the scratch database (new, created by the caller)
    config: str | None = None
    script_location: str | None = None
    version_table: str = "alembic_version"
    x_arguments: dict[str, str] = field(default_factory=dict)
    start: str | None = None  # the live database's revision(s), comma-joined; None: base
    target: str | None = None  # None: base
    queries: list[dict[str, Any]] = field(default_factory=list)  # app_queries' entries
    walk_limit: int = 25  # more pending revisions than this: the plan is applied in one step, not walked
    compare_models: bool = True
    # May the rehearsal drop and create its scratch database again (a chain Alembic applies only in one run
    # leaves objects a downgrade does not remove)? Never a name in ``protect`` (the live database).
    recreate: bool = False
    protect: tuple[str, ...] = ()
    conn: ConnInfo | None = field(default=None, repr=False)


def _migrate(req: RehearsalRequest, revision: str | None, *, down: bool = False) -> None:
    from ansible.module_utils.alembic_runner import MigrationRequest, run

    run(MigrationRequest(url=req.url, conn=req.conn, config=req.config, script_location=req.script_location,
                         revision=revision or "base", allow_downgrade=down, advisory_lock=False,
                         version_table=req.version_table, x_arguments=dict(req.x_arguments),
                         record_checksums=False))


def _schema(req: RehearsalRequest) -> dict:
    from ansible.module_utils.db_inspect import inspect_database

    return inspect_database(req.conn, row_counts=False, schema=True, version_table=req.version_table)["schema"]


def _prepared(req: RehearsalRequest) -> dict[str, dict[str, Any]]:
    if not req.queries:
        return {}
    conn = req.conn.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = '10s'")
            return prepare_all(cur, req.queries)
    finally:
        conn.rollback()
        conn.close()


def _pending(req: RehearsalRequest) -> list[str]:
    from ansible.module_utils.alembic_runner import MigrationRequest, inspect_plan

    plan, _ = inspect_plan(MigrationRequest(url=req.url, conn=req.conn, config=req.config,
                                            script_location=req.script_location, revision=req.target or "base",
                                            version_table=req.version_table, x_arguments=dict(req.x_arguments)))
    if plan.direction == "down":
        raise OperatorError("A rehearsal checks an upgrade; the target is below the start.", "Rehearse upgrades only.")
    return list(plan.pending)


class _Walk:
    """What the walk up has seen: the heads and the schema after each step, the queries newly broken and by which
    revision."""

    def __init__(self, req: RehearsalRequest) -> None:
        self.req = req
        self.states: list[tuple[str, ...]] = []  # the scratch database's heads: at the start, after each step
        self.schemas: list[dict] = []
        self.baseline: dict[str, dict[str, Any]] = {}
        self.broken: dict[str, dict[str, Any]] = {}
        self.one_run = False

    def record(self, responsible: str | None) -> None:
        from ansible.module_utils.alembic_session import current_revisions

        self.states.append(current_revisions(self.req.conn, self.req.version_table))
        self.schemas.append(_schema(self.req))
        results = _prepared(self.req)
        if responsible is None:
            self.baseline = results
            return
        for query, found in results.items():
            if self.baseline.get(query, {}).get("ok") and not found["ok"] and query not in self.broken:
                self.broken[query] = {"query": shown(query), "revision": responsible, "error": found["error"],
                                      "sqlstate": found["sqlstate"],
                                      "source": next(q["source"] for q in self.req.queries if q["query"] == query)}


def _heads(state: tuple[str, ...]) -> str | None:
    return ",".join(state) or None


def _script(req: RehearsalRequest):
    from ansible.module_utils.alembic_plan import Project, build_config, script_directory

    return script_directory(build_config(Project(req.config, req.script_location, req.version_table,
                                                 dict(req.x_arguments)), req.conn))


def _tips(script, revisions: set[str]) -> tuple[str, ...]:
    """The revisions of the set that no other one of it descends from (what the version table holds)."""
    from ansible.module_utils.alembic_plan import ancestry

    below = {r: ancestry(script, (r,)) - {r} for r in revisions}
    return tuple(sorted(r for r in revisions if not any(r in below[o] for o in revisions if o != r)))


def _walk_up(req: RehearsalRequest, pending: list[str]) -> _Walk:
    """Up one revision at a time (on another branch, the heads reached so far stay: the target is all of them).
    A chain Alembic can only apply in one run (an enum type it creates is remembered only within a run) is
    then applied the way the apply will run it: the rest in one run, the walk marked ``one_run``."""
    walk = _Walk(req)
    walk.record(None)
    script = _script(req)
    for revision in pending if len(pending) <= req.walk_limit else []:
        try:
            _migrate(req, _heads(_tips(script, {*walk.states[-1], revision})))
        except OperatorError:
            break
        walk.record(revision)
    if len(walk.states) - 1 < len(pending):
        walk.one_run = True
        try:
            if len(walk.states) > 1:  # back to the start: the whole plan runs as the apply will run it
                _back_to_start(req, walk)
            _migrate(req, req.target)
        except OperatorError as exc:
            failed = exc.details.get("failed_revision")
            raise OperatorError(f"Revision {failed or req.target} fails on a new scratch database: {exc.message}",
                                "Fix the revision; nothing was changed on the live database.",
                                failed_revision=failed) from None
        walk.record("one of the pending revisions")
    return walk


def _back_to_start(req: RehearsalRequest, walk: _Walk) -> None:
    """A new scratch database at the start (when allowed), else the steps walked down again."""
    from ansible.module_utils.scratch_database import ensure_database

    if req.recreate:
        ensure_database(req.conn, False, protect=req.protect)
        ensure_database(req.conn, True, fresh=True)
        _migrate(req, req.start)
    else:
        _migrate(req, _heads(walk.states[0]), down=True)
    del walk.states[1:], walk.schemas[1:]


def _walk_down(req: RehearsalRequest, pending: list[str], walk: _Walk) -> dict[str, dict[str, Any]]:
    """Each revision's downgrade, from the top: ok, differs (with the differences) or failed (the error). A walk
    up in one run comes down in one run, compared with the start as a whole."""
    trips: dict[str, dict[str, Any]] = {rev: {"round_trip": NOT_PROVEN, "detail": None} for rev in pending}
    if walk.one_run:
        return _down_in_one_run(req, pending, walk, trips)
    from ansible.module_utils.schema_snapshot import diff_schemas

    for step in range(len(pending), 0, -1):
        revision = pending[step - 1]
        try:
            _migrate(req, _heads(walk.states[step - 1]), down=True)
        except OperatorError as exc:
            trips[revision] = {"round_trip": "failed", "detail": exc.message}
        else:
            diff = diff_schemas(_schema(req), walk.schemas[step - 1])
            trips[revision] = {"round_trip": "differs" if diff else "ok", "detail": "; ".join(diff[:10]) or None}
        if trips[revision]["round_trip"] != "ok" and step > 1 and not _rebuilt_at(req, walk.states[step - 1]):
            for below in pending[:step - 1]:  # the rest cannot be walked from a schema that is not theirs
                trips[below] = {"round_trip": NOT_PROVEN, "stopped": True,
                                "detail": f"the walk down stopped at {revision}"}
            break
    return trips


def _rebuilt_at(req: RehearsalRequest, state: tuple[str, ...]) -> bool:
    """A new scratch database at ``state`` (so the walk down goes on below a revision whose downgrade did not give
    the schema back); False when not allowed (``recreate``) or when that fails."""
    from ansible.module_utils.scratch_database import ensure_database

    if not req.recreate:
        return False
    try:
        ensure_database(req.conn, False, protect=req.protect)
        ensure_database(req.conn, True, fresh=True)
        _migrate(req, _heads(state))
    except OperatorError:
        return False
    return True


def _down_in_one_run(req: RehearsalRequest, pending: list[str], walk: _Walk,
                     trips: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from ansible.module_utils.schema_snapshot import diff_schemas

    why = (f"more than {req.walk_limit} pending revisions" if len(pending) > req.walk_limit
           else "Alembic applies them only in one run") + ": walked down and up as a whole"
    try:
        _migrate(req, _heads(walk.states[0]), down=True)
    except OperatorError as exc:
        failed = exc.details.get("failed_revision")
        if failed in trips:
            trips[failed] = {"round_trip": "failed", "detail": exc.message}
        return {rev: trip if trip["detail"] else {**trip, "detail": why} for rev, trip in trips.items()}
    diff = diff_schemas(_schema(req), walk.schemas[0])
    detail = f"{why}; back at the start the schema differs: {'; '.join(diff[:10])}" if diff else why
    # Back at the start with another schema: one of them did not give its part back, which one is unknown.
    return {rev: {"round_trip": "ok", "detail": detail} if not diff else
            {"round_trip": NOT_PROVEN, "detail": detail, "stopped": True} for rev in pending}


def rehearse(req: RehearsalRequest) -> dict[str, Any]:
    """The rehearsal's findings (see the module docstring); the scratch database ends at the target."""
    started = time.monotonic()
    _migrate(req, req.start)
    pending = _pending(req)
    walk = _walk_up(req, pending)
    models = _models(req) if req.compare_models else {"checked": False, "reason": "off", "diffs": []}
    trips = _walk_down(req, pending, walk)
    back_up = _up_again(req, trips)
    return {
        "pending": pending,
        "round_trips": [{"revision": rev, **trips[rev]} for rev in pending],
        "queries": {"checked": sum(1 for r in walk.baseline.values() if r["ok"]),
                    "not_checkable": [{"query": shown(q), "error": r["error"]}
                                      for q, r in walk.baseline.items() if not r["ok"]],
                    "broken": list(walk.broken.values())},
        "models": models,
        "at_target": back_up is None,
        "back_up_error": back_up,
        "duration_s": round(time.monotonic() - started, 3),
    }


def _up_again(req: RehearsalRequest, trips: dict[str, dict[str, Any]]) -> str | None:
    """Back up to the target (verify compares the live database with it); None, or why it could not. A revision
    that fails to go up again after the walk down left something behind (a function, a type): irreversible, and
    the scratch database is built again at the target when allowed."""
    try:
        _migrate(req, req.target)
        return None
    except OperatorError as exc:
        failed, message = exc.details.get("failed_revision"), exc.message
    if failed in trips and trips[failed]["round_trip"] in ("ok", NOT_PROVEN):
        trips[failed] = {"round_trip": "differs", "detail": f"up again after its downgrade fails: {message}"}
    target = tuple((req.target or "").split(",")) if req.target else ()
    return None if _rebuilt_at(req, target) else message


def _models(req: RehearsalRequest) -> dict[str, Any]:
    from ansible.module_utils.alembic_models import compare_models
    from ansible.module_utils.alembic_plan import Project, in_project_home

    project = Project(req.config, req.script_location, req.version_table, dict(req.x_arguments))
    with in_project_home(project), contextlib.redirect_stdout(sys.stderr):
        return compare_models(project, req.conn)


def collect_queries(live: ConnInfo | None, files: list[str], limit: int) -> tuple[list[dict[str, Any]], dict]:
    """The app's queries: its files' DML, then the live database's most called (pg_stat_statements)."""
    from ansible.module_utils.app_queries import from_files, from_stat_statements

    queries = from_files(files)
    sources: dict[str, Any] = {"files": list(files), "stat_statements": 0, "stat_statements_unread": None}
    if live is not None and limit > 0:
        conn = live.connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                found, why_not = from_stat_statements(cur, limit)
        finally:
            conn.rollback()
            conn.close()
        known = {q["query"] for q in queries}
        queries += [q for q in found if q["query"] not in known]
        sources.update(stat_statements=len(found), stat_statements_unread=why_not)
    sources["skipped"] = [{"query": shown(q["query"]), "source": q["source"], "why": q["skipped"]}
                          for q in queries if q.get("skipped")]
    return queries, sources
