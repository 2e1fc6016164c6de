"""Lint a plan's offline SQL, revision by revision: squawk's rules and ours, on PostgreSQL's own parser.

Input: the pending revisions as ``alembic_migrate`` returns them in check mode (each with its own ``sql``
and ``downgrade``). The same code serves the preview role (through the ``migration_lint`` module) and
``bin/lint-migrations``. Each finding names its revision, statement, rule, severity, why it hurts a live
PostgreSQL and the safe pattern; the environment decides severities, reviewed exceptions and what blocks.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.lint_own_rules import our_findings
from ansible.module_utils.lint_rules import SEVERITIES
from ansible.module_utils.lint_walk import walk_plan
from ansible.module_utils.squawk_lint import squawk_findings, squawk_version

DEFAULT_BLOCKING = ("error",)


def lint_plan(revisions: list[dict[str, Any]], *, direction: str = "up", version_table: str = "alembic_version",
              severity: dict[str, str] | None = None, accept: list[str] | None = None,
              blocking: list[str] | tuple[str, ...] = DEFAULT_BLOCKING, pg_version: str | None = None) -> dict:
    """Every finding on the plan, in the order the revisions run, settled for the environment."""
    _check_settings(severity or {}, list(blocking), list(accept or []), revisions)
    walk = walk_plan(revisions, version_table)
    pg_version = squawk_pg_version(pg_version)
    order = {entry["revision"]: i for i, entry in enumerate(revisions)}
    found = our_findings(walk, revisions, direction) + squawk_findings(walk, revisions, pg_version)
    found.sort(key=lambda f: (order.get(f["revision"], 0), f["line"] or 0, f["rule"]))
    for f in found:
        f["path"] = next((e.get("path") for e in revisions if e["revision"] == f["revision"]), None)
    result = settle(found, severity or {}, list(accept or []), list(blocking))
    unused = [a for a in (accept or []) if not any(f["accepted"] == a for f in result["accepted"])]
    result.update(squawk_version=squawk_version(), statements=len(walk.statements), unused_accepts=unused,
                  blocking_severities=list(blocking), severity_overrides=dict(severity or {}))
    return result


def _check_settings(severity: dict[str, str], blocking: list[str], accept: list[str],
                    revisions: list[dict[str, Any]]) -> None:
    """A typo in an environment's lint settings must never open a gate silently."""
    from ansible.module_utils.operator_error import OperatorError

    bad = [b for b in blocking if b not in ("error", "warn", "info", "refused")]
    if bad:
        raise OperatorError(f"rm_lint_blocking names {', '.join(map(repr, bad))}, which is not a severity.",
                            "Use error, warn, info or refused.")
    bad = [f"{k}={v}" for k, v in severity.items() if str(v).lower() not in SEVERITIES]
    if bad:
        raise OperatorError(f"rm_lint_severity sets {', '.join(bad)}: not a severity.", "Use error, warn, info or off.")
    ids = [e["revision"] for e in revisions]
    for entry in accept:
        revision, sep, name = str(entry).strip().rpartition(":")
        matches = [i for i in ids if i == revision] or [i for i in ids if revision and i.startswith(revision)]
        if not sep or not name or len(matches) > 1:
            raise OperatorError(f"The lint exception '{entry}' is not REVISION:RULE naming one revision"
                                f"{' (it matches ' + ', '.join(matches) + ')' if len(matches) > 1 else ''}.",
                                "Write the revision's full id, ':' and the rule: 4d3f6b8c0e54:ban-drop-column.")


def settle(findings: list[dict[str, Any]], severity: dict[str, str], accept: list[str],
           blocking: list[str]) -> dict[str, Any]:
    """Apply the environment's severities and reviewed exceptions (``REVISION:RULE``); say what blocks."""
    kept, accepted = [], []
    for f in findings:
        level = str(severity.get(f["rule"], f["severity"])).lower()
        if level == "off":
            continue
        f = {**f, "severity": level}
        exception = next((a for a in accept if _accepts(a, f)), None)
        f["accepted"] = exception
        f["blocking"] = (level in blocking or ("refused" in blocking and f["refused"])) and exception is None
        (accepted if exception else kept).append(f)
    blocking_found = [f for f in kept if f["blocking"]]
    counts = {level: sum(1 for f in kept if f["severity"] == level) for level in ("error", "warn", "info")}
    return {"findings": kept + accepted, "blocking": blocking_found, "accepted": accepted, "counts": counts}


def _accepts(entry: str, finding: dict[str, Any]) -> bool:
    """REVISION:RULE, the revision by its id or a prefix naming one revision of the plan (checked before)."""
    revision, _, name = str(entry).strip().rpartition(":")
    return len(revision) >= 4 and finding["revision"].startswith(revision) and name == finding["rule"]


def squawk_pg_version(version: str | int | None) -> str | None:
    """``15.4``, ``15``, ``150004`` or ``15.4 (Debian ...)`` as squawk takes it (``15.4``); None if unreadable."""
    text = str(version or "").strip().split(" ")[0]
    if text.isdigit() and len(text) >= 5:  # server_version_num
        return f"{int(text) // 10000}.{int(text) % 100}"
    parts = text.split(".")
    if not parts[0].isdigit():
        return None
    minor = parts[1] if len(parts) > 1 and parts[1].isdigit() else "0"
    return f"{parts[0]}.{minor}"


def _where(f: dict[str, Any]) -> str:
    line = f" line {f['line']}" if f.get("line") else ""
    path = f" ({f['path']})" if f.get("path") else ""
    return f"{f['revision']}{path}{line}"


def describe(result: dict[str, Any]) -> str:
    """One line per blocking finding, or a one-line summary."""
    counts = result["counts"]
    summary = (f"{counts['error']} error(s), {counts['warn']} warning(s), {counts['info']} note(s), "
               f"{len(result['accepted'])} accepted, in {result['statements']} statement(s)")
    if not result["blocking"]:
        return f"Nothing blocks: {summary}."
    lines = [f"{len(result['blocking'])} finding(s) block the run ({summary}):"]
    lines += [f"- {_where(f)}: [{f['rule']}] {f['why']} Fix: {f['fix']} Statement: {f['statement'][:120]}"
              for f in result["blocking"]]
    return "\n".join(lines)


def as_text(result: dict[str, Any]) -> str:
    """Every finding, for a terminal: where, severity, rule, statement, why and fix."""
    out = []
    for f in result["findings"]:
        tag = "accepted" if f["accepted"] else ("BLOCKS" if f["blocking"] else f["severity"])
        out.append(f"{_where(f)}: {tag}: [{f['rule']}] ({f['source']})\n    {f['statement'][:160]}\n"
                   f"    why: {f['why']}\n    fix: {f['fix']}")
    out.append(describe(result))
    return "\n".join(out)
