"""The command line of bin/lint-migrations: the preview role's lint, without Ansible or a database.

The plan runs from ``--from`` (default: base) to ``--to`` (default: heads); each revision's offline SQL is
rendered by the project's own env.py (offline: nothing connects) and linted. Exit 1 when a finding blocks,
0 otherwise, 2 when the lint cannot run (the message says why).
"""

from __future__ import annotations

import argparse
import json
import sys

from ansible.module_utils.operator_error import OperatorError

# Offline rendering needs a URL for the dialect; nothing connects to it.
PLACEHOLDER_URL = "postgresql://lint@localhost/lint"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lint-migrations", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the project's alembic.ini")
    p.add_argument("--from", dest="start", default="base", help="the revision the database is at (default: base)")
    p.add_argument("--to", dest="end", default="heads", help="the target revision (default: heads)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--severity", action="append", default=[], metavar="RULE=LEVEL",
                   help="a rule's severity: error, warn, info or off (repeatable)")
    p.add_argument("--accept", action="append", default=[], metavar="REVISION:RULE",
                   help="a reviewed exception (repeatable)")
    p.add_argument("--blocking", default="error", help="severities that block, comma-separated (default: error)")
    p.add_argument("--pg-version", help="the target server's PostgreSQL version, e.g. 15.4")
    p.add_argument("--version-table", default="alembic_version")
    p.add_argument("--url", help="a URL for env.py's dialect (default: the ini's sqlalchemy.url, else a placeholder)")
    p.add_argument("-x", dest="x_arguments", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to env.py as alembic -x (repeatable)")
    return p


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OperatorError(f"{what} '{item}' is not KEY=VALUE.", f"Write it as {what.upper()}=VALUE.")
        out[key.strip()] = value.strip()
    return out


def _plan(args):
    from ansible.module_utils.alembic_plan import Project, build_config, plan_for, resolve_target, script_directory
    from ansible.module_utils.pg_connection import ConnInfo

    project = Project(args.config, None, args.version_table, _pairs(args.x_arguments, "-x"))
    cfg = build_config(project)
    url = args.url or cfg.get_main_option("sqlalchemy.url") or PLACEHOLDER_URL
    conn = ConnInfo.parse(url if "://" in url else PLACEHOLDER_URL)
    script = script_directory(build_config(project, conn))
    current = () if args.start == "base" else resolve_target(script, args.start, ())
    plan = plan_for(script, current, resolve_target(script, args.end, current))
    if plan.direction == "down":
        raise OperatorError(f"--to {args.end} is below --from {args.start}.", "The lint checks upgrades.")
    return project, conn, plan, script


def run(args) -> tuple[int, str]:
    from ansible.module_utils.alembic_offline import render_plan
    from ansible.module_utils.migration_lint import as_text, lint_plan

    project, conn, plan, script = _plan(args)
    rendered = render_plan(project, conn, plan, script)
    if rendered.get("sql_error"):
        raise OperatorError(rendered["sql_error"] + ".",
                            "A revision that reads the database cannot be linted offline; lint it in the preview.")
    result = lint_plan(rendered["revisions"], version_table=args.version_table,
                       severity=_pairs(args.severity, "--severity"), accept=args.accept,
                       blocking=[s.strip() for s in args.blocking.split(",") if s.strip()],
                       pg_version=args.pg_version)
    result.update(from_revision=plan.from_revision, to_revision=plan.target_revision, pending=list(plan.pending),
                  sql_sha256=rendered["sql_sha256"])
    text = json.dumps(result, indent=2) if args.format == "json" else as_text(result)
    return (1 if result["blocking"] else 0), text


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        status, text = run(args)
    except OperatorError as err:
        print(f"lint-migrations: {err}", file=sys.stderr)
        return 2
    print(text)
    return status
