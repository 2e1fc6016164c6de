"""Alembic as a declarative, lock-safe step: plan, preview and apply revisions on PostgreSQL.

Wraps Alembic's own layers (STYLE.md): ``ScriptDirectory`` reads the revision graph,
``MigrationContext`` reads the live revision, ``alembic.command`` runs the migrations with a
``Config`` whose ``attributes["connection"]`` carries our connection (so ``lock_timeout`` and
``statement_timeout`` are set on the very session that migrates). Projects whose ``env.py`` ignores
that attribute still get the timeouts through ``PGOPTIONS`` and the URL through ``sqlalchemy.url``.

Revisions are applied one at a time, so a failure names the revision that failed and the revision
the database is left at, and a lock timeout retries only the step that hit it.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo, explain_connect_error, redact
from ansible.module_utils.sql_lint import lint_sql

LOCK_NOT_AVAILABLE = "55P03"
LOCK_TIMEOUT_TEXT = "canceling statement due to lock timeout"


@dataclass
class MigrationRequest:
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
    conn: ConnInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.conn = ConnInfo.parse(self.url)


@dataclass
class Plan:
    current: tuple[str, ...]
    heads: tuple[str, ...]
    target: tuple[str, ...]
    direction: str  # up | down | none
    pending: list[str]  # in the order they would run

    @property
    def from_revision(self) -> str | None:
        return ",".join(self.current) or None

    @property
    def target_revision(self) -> str | None:
        return ",".join(self.target) or None


# ----------------------------------------------------------------------------------------------
# Alembic configuration and the revision graph


def build_config(req: MigrationRequest, output: io.StringIO | None = None):
    """An Alembic Config for the request: ini (relative paths resolve against its directory)."""
    from alembic.config import Config

    ini = req.config
    if ini:
        ini = os.path.abspath(os.path.expanduser(ini))
        if not os.path.isfile(ini):
            raise OperatorError(
                f"Alembic config {ini} does not exist.",
                "Point 'config' at the project's alembic.ini (in the app pod: its path inside the image).",
            )
    elif not req.script_location:
        raise OperatorError("Neither 'config' nor 'script_location' was given.", "Pass the path of alembic.ini.")
    cmd_opts = _CmdOpts([f"{k}={v}" for k, v in req.x_arguments.items()]) if req.x_arguments else None
    cfg = Config(ini, output_buffer=output, stdout=output or io.StringIO(), cmd_opts=cmd_opts)
    base_dir = os.path.dirname(ini) if ini else os.getcwd()
    location = req.script_location or cfg.get_main_option("script_location")
    if not location:
        raise OperatorError(f"{ini} has no script_location.", "Set script_location in the ini or pass it.")
    if not os.path.isabs(location) and ":" not in location:
        location = os.path.join(base_dir, location)
    cfg.set_main_option("script_location", location)
    if ini:
        # Many env.py files import the application relative to the ini's directory.
        cfg.set_main_option("prepend_sys_path", cfg.get_main_option("prepend_sys_path") or base_dir)
    cfg.set_main_option("sqlalchemy.url", req.conn.sqlalchemy_url().replace("%", "%%"))
    cfg.set_main_option("version_table", req.version_table)
    return cfg


class _CmdOpts:
    def __init__(self, x: list[str]) -> None:
        self.x = x


def script_directory(cfg):
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(cfg)
    except CommandError as exc:
        raise OperatorError(f"Cannot read the Alembic scripts: {exc}", "Check config / script_location.") from None


def _ancestry(script, revisions: tuple[str, ...]) -> set[str]:
    seen: set[str] = set()
    for rev in revisions:
        for sc in script.walk_revisions(base="base", head=rev):
            seen.add(sc.revision)
    return seen


def _topological(script) -> list[str]:
    """Every revision, base first."""
    return [sc.revision for sc in reversed(list(script.walk_revisions(base="base", head="heads")))]


def resolve_target(script, spec: str, current: tuple[str, ...]) -> tuple[str, ...]:
    """What ``revision`` means here, as a tuple of revision ids (empty = base)."""
    from alembic.util import CommandError

    spec = (spec or "").strip() or "head"
    heads = tuple(script.get_heads())
    if spec == "base":
        return ()
    if spec == "heads":
        return heads
    if spec == "head":
        if len(heads) > 1:
            raise OperatorError(
                f"The Alembic chain has {len(heads)} heads ({', '.join(heads)}); 'head' is ambiguous.",
                "Merge the heads (alembic merge heads), or target one branch: revision: BRANCH@head, or 'heads'.",
                heads=list(heads),
            )
        return heads
    if spec[0] in "+-" and spec[1:].isdigit():
        return _relative(script, spec, current)
    if "," in spec:  # several revisions (e.g. every head, as a run's report records them): each resolved
        found: list[str] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            found += [r for r in resolve_target(script, part, current) if r not in found]
        return tuple(found)
    try:
        found_scripts = script.get_revisions(spec)
    except CommandError as exc:
        matches = sorted(r for r in _topological(script) if r.startswith(spec))
        if len(matches) > 1:
            raise OperatorError(
                f"Revision '{spec}' is ambiguous: {len(matches)} revisions start with it ({', '.join(matches[:10])}).",
                "Give more characters of the revision id.",
                matches=matches,
            ) from None
        raise OperatorError(
            f"Revision '{spec}' is not in the Alembic chain: {exc}",
            f"Use an id from `alembic history` (heads: {', '.join(heads) or 'none'}), 'head', 'base' or -N/+N.",
            heads=list(heads),
        ) from None
    return tuple(sc.revision for sc in found_scripts if sc is not None)


def _relative(script, spec: str, current: tuple[str, ...]) -> tuple[str, ...]:
    steps = int(spec[1:])
    if len(current) > 1:
        raise OperatorError(
            f"The database is at several heads ({', '.join(current)}); relative '{spec}' is ambiguous.",
            "Name the target revision instead.",
        )
    if spec[0] == "-":
        below = [sc.revision for sc in script.walk_revisions(base="base", head=current[0])] if current else []
        if steps > len(below):
            raise OperatorError(
                f"Cannot go down {steps} revision(s): the database is {len(below)} revision(s) above base.",
                "Use a smaller step, or revision: base.",
            )
        return (below[steps],) if steps < len(below) else ()
    order = _topological(script)
    above = order if not current else [r for r in order if r not in _ancestry(script, current)]
    if steps > len(above):
        raise OperatorError(
            f"Cannot go up {steps} revision(s): only {len(above)} revision(s) are above the database.",
            "Use a smaller step, or revision: head.",
        )
    return (above[steps - 1],) if steps else current


def plan_for(script, current: tuple[str, ...], target: tuple[str, ...]) -> Plan:
    from alembic.util import CommandError

    heads = tuple(script.get_heads())
    try:
        have = _ancestry(script, current)
    except CommandError:
        have = set()
    want = _ancestry(script, target)
    if any(r not in have for r in current):
        raise OperatorError(
            f"The database is at revision {', '.join(current)}, which this Alembic project does not know.",
            "Deploy the code that contains that revision, or check you point at the right database/project.",
        )
    to_apply, to_remove = want - have, have - want
    order = _topological(script)
    if to_apply and to_remove:
        raise OperatorError(
            f"Target {', '.join(target)} is on another branch than the database ({', '.join(current)}).",
            "Downgrade to a common ancestor first, then upgrade to the other branch.",
        )
    if to_apply:
        return Plan(current, heads, target, "up", [r for r in order if r in to_apply])
    if to_remove:
        return Plan(current, heads, target, "down", [r for r in reversed(order) if r in to_remove])
    return Plan(current, heads, target, "none", [])


# ----------------------------------------------------------------------------------------------
# The database side


def _engine(conn: ConnInfo):
    from sqlalchemy import create_engine, pool

    return create_engine(conn.sync_sqlalchemy_url(), poolclass=pool.NullPool)


def current_revisions(connection, version_table: str) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(connection, opts={"version_table": version_table})
    revs = tuple(sorted(ctx.get_current_heads()))
    if connection.in_transaction():
        connection.commit()
    return revs


@contextmanager
def migration_connection(req: MigrationRequest):
    """A SQLAlchemy connection with the session's timeouts set; connection errors explained."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import text

    engine = _engine(req.conn)
    try:
        try:
            conn = engine.connect()
        except sa_exc.OperationalError as exc:
            raise explain_connect_error(str(exc.orig), req.conn) from None
        try:
            for name, value in (("lock_timeout", req.lock_timeout), ("statement_timeout", req.statement_timeout)):
                if value:
                    try:
                        conn.execute(text("SELECT set_config(:n, :v, false)"), {"n": name, "v": str(value)})
                    except sa_exc.DBAPIError as exc:
                        raise OperatorError(
                            f"{name} '{value}' is not valid: {str(exc.orig).strip()}",
                            f"Use a PostgreSQL duration such as 200ms, 5s or 15min for {name}.",
                        ) from None
            conn.commit()
            yield conn
        finally:
            conn.close()
    finally:
        engine.dispose()


def advisory_lock_key(version_table: str) -> int:
    """A stable 63-bit key: one migration at a time per database and version table."""
    return zlib.crc32(f"release-migrations:alembic:{version_table}".encode()) | (0x5EED << 32)


@contextmanager
def advisory_lock(conn_info: ConnInfo, version_table: str, wait_s: float):
    """Hold a session advisory lock on its own connection for the whole run."""
    key = advisory_lock_key(version_table)
    conn = conn_info.connect()
    try:
        deadline = time.monotonic() + max(wait_s, 0)
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    holder = _lock_holder(cur, key)
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise OperatorError(
                        f"Another migration is running on database '{conn_info.dbname}'{waited}"
                        f" ({holder}). Nothing was changed.",
                        "Wait for it to finish and run again, or set advisory_lock_wait (seconds) to queue behind it.",
                        lock_holder=holder,
                    )
                time.sleep(0.25)
        yield key
    finally:
        # A lost connection has released the lock already; never let the unlock hide the real error.
        with contextlib.suppress(Exception), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        with contextlib.suppress(Exception):
            conn.close()


def _lock_holder(cur, key: int) -> str:
    cur.execute(
        """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database
                  WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
            LIMIT 1""",
        (key,),
    )
    row = cur.fetchone()
    if not row:
        return "the holder has just finished"
    pid, user, app, addr, since = row
    return (
        f"held by pid {pid}, user {user}, application '{app}', from {addr or 'local socket'}, "
        f"since {since:%H:%M:%S %Z}"
    )


# ----------------------------------------------------------------------------------------------
# Preview and apply


def offline_sql(req: MigrationRequest, plan: Plan) -> str:
    """The SQL Alembic would run for exactly the pending revisions (``alembic upgrade A:B --sql``)."""
    from alembic import command

    if not plan.pending:
        return ""
    buf = io.StringIO()
    cfg = build_config(req, output=buf)
    start = plan.from_revision
    end = plan.target_revision or "base"
    with _libpq_options(req):
        if plan.direction == "up":
            command.upgrade(cfg, f"{start}:{end}" if start else end, sql=True)
        else:
            command.downgrade(cfg, f"{start}:{end}", sql=True)
    return buf.getvalue()


@contextmanager
def _libpq_options(req: MigrationRequest):
    """Timeouts for connections that env.py opens by itself (it may ignore ours)."""
    settings = (("lock_timeout", req.lock_timeout), ("statement_timeout", req.statement_timeout))
    opts = [f"-c {name}={value}" for name, value in settings if value]
    saved = os.environ.get("PGOPTIONS")
    if opts:
        os.environ["PGOPTIONS"] = " ".join(([saved] if saved else []) + opts)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = saved


def _is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "pgcode", None) == LOCK_NOT_AVAILABLE or LOCK_TIMEOUT_TEXT in str(orig)


def _error_text(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.split("\n[SQL:")[0].strip()


def inspect_plan(req: MigrationRequest, database_missing: bool = False) -> tuple[Plan, Any]:
    cfg = build_config(req)
    script = script_directory(cfg)
    if database_missing:  # check mode with create_database: a new database starts at base
        current: tuple[str, ...] = ()
    else:
        with migration_connection(req) as conn:
            current = current_revisions(conn, req.version_table)
    target = resolve_target(script, req.revision, current)
    return plan_for(script, current, target), script


def _check_direction(req: MigrationRequest, plan: Plan) -> None:
    if plan.direction == "down" and not req.allow_downgrade:
        raise OperatorError(
            f"Revision '{req.revision}' ({plan.target_revision or 'base'}) is below the database's revision "
            f"({plan.from_revision}): that is a downgrade of {len(plan.pending)} revision(s) "
            f"({', '.join(plan.pending)}). Nothing was changed.",
            "Use playbooks/rollback.yml, or set allow_downgrade: true if a downgrade is really meant.",
            pending=plan.pending,
        )


def run(req: MigrationRequest, *, check: bool = False, sql_only: bool = False) -> dict[str, Any]:
    """Plan, and unless check/sql_only, apply. Returns the module's result (not yet redacted)."""
    started = time.monotonic()
    created = False
    if req.create_database:
        from ansible.module_utils.scratch_database import ensure_database

        created = ensure_database(req.conn, True, check=check or sql_only)
    plan, script = inspect_plan(req, database_missing=created and (check or sql_only))
    _check_direction(req, plan)
    result = _plan_result(plan)
    result["database_created"] = created
    if check or sql_only or not plan.pending:
        if plan.pending:
            result.update(_preview(req, plan))
        result.update(changed=(bool(plan.pending) or created) and not sql_only, to_revision=plan.from_revision,
                      duration_s=round(time.monotonic() - started, 3))
        return result

    lock = advisory_lock(req.conn, req.version_table, req.advisory_lock_wait) if req.advisory_lock else _nolock()
    with lock:
        # Someone may have migrated while we waited for the lock: plan again under it.
        plan, script = inspect_plan(req)
        _check_direction(req, plan)
        result = _plan_result(plan)
        result["database_created"] = created
        steps, retries = _apply(req, plan, script)
    with migration_connection(req) as conn:
        after = current_revisions(conn, req.version_table)
    result.update(
        changed=bool(steps) or created,
        to_revision=",".join(after) or None,
        current=list(after),
        applied=[s["revision"] for s in steps],
        steps=steps,
        lock_retries_used=retries,
        duration_s=round(time.monotonic() - started, 3),
    )
    return result


@contextmanager
def _nolock():
    yield None


def _plan_result(plan: Plan) -> dict[str, Any]:
    return {
        "from_revision": plan.from_revision,
        "target_revision": plan.target_revision,
        "direction": plan.direction,
        "pending": list(plan.pending),
        "heads": list(plan.heads),
        "current": list(plan.current),
        "applied": [],
        "steps": [],
        "lock_retries_used": 0,
        "sql": "",
        "sql_findings": [],
    }


def _preview(req: MigrationRequest, plan: Plan) -> dict[str, Any]:
    try:
        text = offline_sql(req, plan)
    except Exception as exc:  # a revision that queries the database cannot render offline
        return {"sql": "", "sql_error": f"Offline SQL could not be rendered: {_error_text(exc)}"}
    return {"sql": text, "sql_findings": lint_sql(text)}


def _apply(req: MigrationRequest, plan: Plan, script) -> tuple[list[dict[str, Any]], int]:
    from alembic import command

    steps: list[dict[str, Any]] = []
    retries_used = 0
    with migration_connection(req) as conn, _libpq_options(req):
        cfg = build_config(req)
        cfg.attributes["connection"] = conn
        for index, rev in enumerate(plan.pending):
            destination = rev if plan.direction == "up" else _down_destination(script, rev, plan, index)
            attempt = 0
            step_start = time.monotonic()
            while True:
                try:
                    if plan.direction == "up":
                        command.upgrade(cfg, destination)
                    else:
                        command.downgrade(cfg, destination)
                    if conn.in_transaction():
                        conn.commit()
                    break
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        if conn.in_transaction():
                            conn.rollback()
                    if _is_lock_timeout(exc) and attempt < req.lock_retries:
                        attempt += 1
                        retries_used += 1
                        time.sleep(req.lock_retry_delay)
                        continue
                    left = _revisions_after_failure(req, conn)
                    lock_hint = (
                        f" It timed out waiting for a lock {attempt + 1} time(s) (lock_timeout {req.lock_timeout}):"
                        " a long transaction holds the table; retry when it is gone."
                        if _is_lock_timeout(exc) else ""
                    )
                    raise OperatorError(
                        f"Revision {rev} failed ({plan.direction}grade): {_error_text(exc)}. "
                        f"The database is left at revision {','.join(left) or 'base'}.{lock_hint}",
                        "Fix the migration and run again; the revisions before it are applied and recorded."
                        if steps else "Fix the migration and run again; nothing was applied.",
                        failed_revision=rev,
                        revision_left=",".join(left) or None,
                        applied=[s["revision"] for s in steps],
                        steps=steps,
                        lock_retries_used=retries_used,
                        from_revision=plan.from_revision,
                    ) from None
            sc = script.get_revision(rev)
            steps.append({
                "revision": rev,
                "description": (sc.doc or "").strip() if sc else "",
                "direction": plan.direction,
                "duration_s": round(time.monotonic() - step_start, 3),
                "lock_retries": attempt,
            })
    return steps, retries_used


def _revisions_after_failure(req: MigrationRequest, conn) -> tuple[str, ...]:
    """Where the database is after a failed step: on our session, else a fresh one, else unknown."""
    try:
        return current_revisions(conn, req.version_table)
    except Exception:
        try:
            with migration_connection(req) as fresh:
                return current_revisions(fresh, req.version_table)
        except Exception:
            return ("unknown (the connection was lost; run alembic_migrate in check mode to read it)",)


def _down_destination(script, rev: str, plan: Plan, index: int) -> str:
    """Where one downgrade step lands: the next revision down in the plan, or the final target."""
    if index + 1 < len(plan.pending):
        sc = script.get_revision(rev)
        down = sc.down_revision
        if isinstance(down, str):
            return down
        return plan.pending[index + 1]
    return plan.target_revision or "base"


def safe_result(result: dict[str, Any], conn: ConnInfo) -> dict[str, Any]:
    out = redact(result, conn.secrets)
    out["url"] = conn.masked
    return out
