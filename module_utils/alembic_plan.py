"""Planning a migration: the project's Alembic config, its revision graph, and what a target means.

Wraps Alembic's own layers: a ``Config`` built from the project's ``alembic.ini`` (relative
paths resolve against its directory) and ``ScriptDirectory`` for the graph. Nothing here connects to a
database: the current revision comes in, a :class:`Plan` goes out.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo


@dataclass
class Project:
    """Where an Alembic project is and how it is called: what ``alembic -c INI -x k=v`` would get."""

    config: str | None = None
    script_location: str | None = None
    version_table: str = "alembic_version"
    x_arguments: dict[str, str] = field(default_factory=dict)

    @property
    def ini(self) -> str | None:
        return os.path.abspath(os.path.expanduser(self.config)) if self.config else None

    @property
    def home(self) -> str:
        """The directory the project's own ``alembic`` command is run from: the ini's."""
        return os.path.dirname(self.ini) if self.ini else os.getcwd()


@contextmanager
def in_project_home(project: Project):
    """Run where the project's own ``alembic`` command runs: in the ini's directory.

    Python resolves a relative sys.path entry ('.', as ``prepend_sys_path = .`` adds) to the directory
    that was current when it was first used; those cached finders are dropped so '.' means the ini's
    directory while inside, and the caller's directory again after.
    """
    saved = os.getcwd()
    _forget_relative_finders()
    os.chdir(project.home)
    try:
        yield
    finally:
        os.chdir(saved)
        _forget_relative_finders()


def _forget_relative_finders() -> None:
    for key in [k for k in sys.path_importer_cache if isinstance(k, str) and not os.path.isabs(k)]:
        sys.path_importer_cache.pop(key, None)


def error_text(exc: BaseException) -> str:
    """The message of an exception from env.py or a revision, without SQLAlchemy's [SQL: ...] tail."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    return text.split("\n[SQL:")[0].strip()


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


class _CmdOpts:
    """What Alembic's command line hands to ``context.get_x_argument()``."""

    def __init__(self, x: list[str]) -> None:
        self.x = x


def build_config(project: Project, conn: ConnInfo | None = None, output: io.StringIO | None = None):
    """The project's Alembic Config; ``conn`` (when given) becomes ``sqlalchemy.url``."""
    from alembic.config import Config

    ini = project.ini
    if ini and not os.path.isfile(ini):
        raise OperatorError(
            f"Alembic config {ini} does not exist.",
            "Point 'config' at the project's alembic.ini (in the app pod: its path inside the image).",
        )
    if not ini and not project.script_location:
        raise OperatorError("Neither 'config' nor 'script_location' was given.", "Pass the path of alembic.ini.")
    x_args = [f"{k}={v}" for k, v in project.x_arguments.items()]
    cmd_opts = _CmdOpts(x_args) if x_args else None
    cfg = Config(ini, output_buffer=output, stdout=output or io.StringIO(), cmd_opts=cmd_opts)
    location = project.script_location or cfg.get_main_option("script_location")
    if not location:
        raise OperatorError(f"{ini} has no script_location.", "Set script_location in the ini or pass it.")
    if not os.path.isabs(location) and ":" not in location:
        location = os.path.join(project.home, location)
    cfg.set_main_option("script_location", location)
    if ini and not cfg.get_main_option("prepend_sys_path"):
        # Many env.py files import the application relative to the ini's directory.
        cfg.set_main_option("prepend_sys_path", project.home)
    if conn is not None:
        cfg.set_main_option("sqlalchemy.url", conn.sqlalchemy_url().replace("%", "%%"))
    cfg.set_main_option("version_table", project.version_table)
    return cfg


def script_directory(cfg):
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(cfg)
    except CommandError as exc:
        raise OperatorError(f"Cannot read the Alembic scripts: {exc}", "Check config / script_location.") from None


def ancestry(script, revisions: tuple[str, ...]) -> set[str]:
    """Every revision at or below ``revisions``."""
    seen: set[str] = set()
    for rev in revisions:
        for sc in script.walk_revisions(base="base", head=rev):
            seen.add(sc.revision)
    return seen


def topological(script) -> list[str]:
    """Every revision, base first."""
    return [sc.revision for sc in reversed(list(script.walk_revisions(base="base", head="heads")))]


def resolve_target(script, spec: str, current: tuple[str, ...]) -> tuple[str, ...]:
    """What ``revision`` means here, as a tuple of revision ids (empty = base)."""
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
    return _named(script, spec, heads)


def _named(script, spec: str, heads: tuple[str, ...]) -> tuple[str, ...]:
    from alembic.util import CommandError

    try:
        found = script.get_revisions(spec)
    except CommandError as exc:
        matches = sorted(r for r in topological(script) if r.startswith(spec))
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
    return tuple(sc.revision for sc in found if sc is not None)


def _relative(script, spec: str, current: tuple[str, ...]) -> tuple[str, ...]:
    steps = int(spec[1:])
    known = set(topological(script))
    if any(r not in known for r in current):
        raise OperatorError(
            f"The database is at revision {', '.join(current)}, which this Alembic project does not know; "
            f"'{spec}' cannot be counted from there.",
            "Deploy the code that contains that revision, or check you point at the right database/project.",
        )
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
    order = topological(script)
    above = order if not current else [r for r in order if r not in ancestry(script, current)]
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
        have = ancestry(script, current)
    except CommandError:
        have = set()
    if any(r not in have for r in current):
        raise OperatorError(
            f"The database is at revision {', '.join(current)}, which this Alembic project does not know.",
            "Deploy the code that contains that revision, or check you point at the right database/project.",
        )
    want = ancestry(script, target)
    to_apply, to_remove = want - have, have - want
    order = topological(script)
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


def check_direction(plan: Plan, allow_downgrade: bool, asked: str) -> None:
    if plan.direction == "down" and not allow_downgrade:
        raise OperatorError(
            f"Revision '{asked}' ({plan.target_revision or 'base'}) is below the database's revision "
            f"({plan.from_revision}): that is a downgrade of {len(plan.pending)} revision(s) "
            f"({', '.join(plan.pending)}). Nothing was changed.",
            "Use playbooks/rollback.yml, or set allow_downgrade: true if a downgrade is really meant.",
            pending=plan.pending,
        )
