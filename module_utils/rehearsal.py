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
    """What the walk up has seen: schemas per revision, queries newly broken and by which revision."""

    def __init__(self, req: RehearsalRequest) -> None:
        self.req = req
        self.schemas: dict[str | None, dict] = {}
        self.baseline: dict[str, dict[str, Any]] = {}
        self.broken: dict[str, dict[str, Any]] = {}

    def record(self, revision: str | None, responsible: str | None) -> None:
        self.schemas[revision] = _schema(self.req)
        results = _prepared(self.req)
        if responsible is None:
            self.baseline = results
            return
        for query, found in results.items():
            if self.baseline.get(query, {}).get("ok") and not found["ok"] and query not in self.broken:
                self.broken[query] = {"query": shown(query), "revision": responsible, "error": found["error"],
                                      "sqlstate": found["sqlstate"],
                                      "source": next(q["source"] for q in self.req.queries if q["query"] == query)}


def _walk_up(req: RehearsalRequest, pending: list[str]) -> _Walk:
    walk = _Walk(req)
    walk.record(req.start, None)
    steps = pending if len(pending) <= req.walk_limit else [pending[-1]]
    for revision in steps:
        try:
            _migrate(req, revision)
        except OperatorError as exc:
            raise OperatorError(f"Revision {revision} fails on a new scratch database at its parent revision: "
                                f"{exc.message}", "Fix the revision; nothing was changed on the live database.",
                                failed_revision=revision) from None
        walk.record(revision, revision if len(steps) == len(pending) else "one of the pending revisions")
    return walk


def _walk_down(req: RehearsalRequest, pending: list[str], walk: _Walk) -> dict[str, dict[str, Any]]:
    """Each revision's downgrade, from the top: ok, differs (with the differences) or failed (the error)."""
    from ansible.module_utils.schema_snapshot import diff_schemas

    trips: dict[str, dict[str, Any]] = {rev: {"round_trip": NOT_PROVEN, "detail": None} for rev in pending}
    if len(pending) > req.walk_limit:
        for rev in pending:
            trips[rev]["detail"] = f"more than {req.walk_limit} pending revisions: not walked one by one"
        return trips
    below = [req.start, *pending[:-1]]
    for revision, parent in reversed(list(zip(pending, below, strict=True))):
        try:
            _migrate(req, parent, down=True)
        except OperatorError as exc:
            trips[revision] = {"round_trip": "failed", "detail": exc.message}
            break
        diff = diff_schemas(_schema(req), walk.schemas[parent])
        trips[revision] = {"round_trip": "differs" if diff else "ok", "detail": "; ".join(diff[:10]) or None}
        if diff:
            break
    return trips


def rehearse(req: RehearsalRequest) -> dict[str, Any]:
    """The rehearsal's findings (see the module docstring); the scratch database ends at the target."""
    started = time.monotonic()
    _migrate(req, req.start)
    pending = _pending(req)
    walk = _walk_up(req, pending)
    models = _models(req) if req.compare_models else {"checked": False, "reason": "off", "diffs": []}
    trips = _walk_down(req, pending, walk)
    back_up = None
    try:
        _migrate(req, req.target)
    except OperatorError as exc:
        back_up = exc.message
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
