"""Decisions the lifecycle playbooks take, as plain tested Python (the filters in plugins/filter/lifecycle.py).

Which pod is Ready, whether the clock is inside the maintenance window, what a failed task says (also
when it was a loop), how a successful run is called, and whether a failed run may be rolled back and
how. Nothing here touches a database or a file.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- maintenance window ----------------------------------------------------------------------------


def _minutes(text: str, what: str) -> int:
    try:
        hours, minutes = (int(part) for part in str(text).split(":"))
    except ValueError:
        raise ValueError(f"maintenance window {what} '{text}' is not HH:MM") from None
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or hours * 60 + minutes > 24 * 60:
        raise ValueError(f"maintenance window {what} '{text}' is not a time of day (00:00-24:00)")
    return hours * 60 + minutes


def maintenance_window(window: dict[str, Any] | None, now: datetime | str | None = None) -> dict[str, Any]:
    """Whether ``now`` (UTC) is inside ``{days: [sat, sun], start: "23:00", end: "01:00"}``.

    ``days`` are the days a window *starts* on; a window whose end is not after its start spans
    midnight (23:00-01:00 on sat covers sat 23:00 to sun 01:00). An empty window is always open.
    Returns {open, now, describe}.
    """
    moment = _utc(now)
    if not window:
        return {"open": True, "now": moment.strftime("%a %H:%M").lower(), "describe": "any time", "closes_at": None}
    start = _minutes(window.get("start", "00:00"), "start")
    end = _minutes(window.get("end", "24:00"), "end")
    days = [str(d).lower()[:3] for d in (window.get("days") or DAYS)]
    unknown = [d for d in days if d not in DAYS]
    if unknown:
        raise ValueError(f"maintenance window days {unknown} are not mon..sun")
    minute = moment.hour * 60 + moment.minute
    today, yesterday = DAYS[moment.weekday()], DAYS[(moment - timedelta(days=1)).weekday()]
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    closes_at = None
    if start < end:
        inside = today in days and start <= minute < end
        closes_at = midnight + timedelta(minutes=end)
    elif today in days and minute >= start:  # spans midnight (or the whole day when start == end)
        inside, closes_at = True, midnight + timedelta(days=1, minutes=end)
    else:
        inside, closes_at = yesterday in days and minute < end, midnight + timedelta(minutes=end)
    describe = f"{','.join(days)} {window.get('start', '00:00')}-{window.get('end', '24:00')} UTC"
    if start >= end:
        describe += " (ends the next day)"
    return {"open": inside, "now": f"{today} {moment:%H:%M}", "describe": describe,
            "closes_at": closes_at.strftime("%Y-%m-%dT%H:%M:%SZ") if inside else None}


def _utc(now: datetime | str | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, str):
        now = datetime.fromisoformat(now.replace("Z", "+00:00"))
    return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)


# --- Kubernetes pods -------------------------------------------------------------------------------


def ready_pods(found: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """From a looped ``k8s_info`` result: {role: {ready: [names], seen: ["name (phase, Ready|not Ready)"]}}.

    A pod counts when it is Running, its Ready condition is True, and it is not being deleted.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for result in found.get("results", []):
        if result.get("skipped"):
            continue
        role = result["item"]["role"]
        ready, seen = [], []
        for pod in sorted(result.get("resources", []), key=lambda p: p["metadata"]["name"]):
            name = pod["metadata"]["name"]
            status = pod.get("status") or {}
            is_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in status.get("conditions") or [])
            phase = status.get("phase", "Unknown")
            leaving = "deletionTimestamp" in pod["metadata"]
            seen.append(f"{name} ({phase}, {'Ready' if is_ready else 'not Ready'}{', terminating' if leaving else ''})")
            if phase == "Running" and is_ready and not leaving:
                ready.append(name)
        out[role] = {"ready": ready, "seen": seen}
    return out


# --- failures and outcomes -------------------------------------------------------------------------


def failure_summary(task_name: str | None, result: dict[str, Any] | None) -> dict[str, Any]:
    """What failed, from ``ansible_failed_task``/``ansible_failed_result``; a loop's failed items are read
    one by one (Ansible's own message for them is only "One or more items failed")."""
    result = result or {}
    msg, hint = result.get("msg"), result.get("hint")
    failed_items = [r for r in result.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if failed_items:
        parts = []
        for item in failed_items:
            label = item.get("_ansible_item_label") or item.get("item")
            if isinstance(label, dict):
                label = label.get("role") or label.get("name") or label
            parts.append(f"{label}: {item.get('msg', 'failed')}")
        msg = "; ".join(parts)
        hint = hint or next((i.get("hint") for i in failed_items if i.get("hint")), None)
    return {
        "task": task_name or "?",
        "msg": str(msg or "unknown error"),
        "hint": hint,
        "failed_revision": result.get("failed_revision"),
        "revision_left": result.get("revision_left"),
        "applied": result.get("applied") or [],
        "steps": result.get("steps") or [],
        "lock_holder": result.get("lock_holder"),
    }


def success_outcome(operation: str, dry_run: bool, pending: list[str], applied: list[str] | None) -> str:
    """How a run that did not fail is called in its report."""
    if operation in ("migrate", "rollback"):
        if not pending:
            return "up-to-date"
        if dry_run:
            return "dry-run"
        if not applied:  # queued behind another run that applied the same revisions
            return "up-to-date"
        return "rolled-back" if operation == "rollback" else "migrated"
    if dry_run:
        return "dry-run"
    return {"backup": "backed-up", "restore": "restored", "drill": "drill-passed"}.get(operation, "done")


def rollback_plan(failure: dict[str, Any], applied: list[str], backup_taken: bool,
                  allow_restore: bool, way_back: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether the rescue rolls back, how (``method``, from the preview's way back of the applied revisions),
    and whether it may fall back to a restore.

    Only what this run applied is undone; a run refused at the migration lock undid nothing and never
    restores over the other run's work (the error carries ``lock_holder``). A way back of ``forward-fix``
    (an irreversible revision with nothing to restore, or a lossy downgrade not allowed) rolls nothing back.
    """
    ours = bool(applied) or bool(failure.get("applied")) or bool(failure.get("failed_revision"))
    other_run = bool(failure.get("lock_holder"))
    way_back = way_back or {"method": "downgrade", "tables": [], "created": [], "why": "no plan"}
    fix_forward = way_back["method"] == "forward-fix"
    return {
        "roll_back": backup_taken and ours and not other_run and not fix_forward,
        "restore_allowed": allow_restore and backup_taken and not other_run,
        "method": way_back["method"], "tables": way_back.get("tables", []), "created": way_back.get("created", []),
        "reason": ("another migration holds the lock: nothing of ours to undo" if other_run
                   else "nothing was applied" if not ours
                   else "no backup was taken" if not backup_taken
                   else f"the way back is a forward fix: {way_back['why']}" if fix_forward
                   else f"this run applied revisions; {way_back['method']}: {way_back['why']}"),
    }


def writers_not_back(saved: dict[str, Any], found: dict[str, Any]) -> list[dict[str, Any]]:
    """The writers whose replica count, as the API reports it now (a looped ``k8s_info`` result), is not
    the count saved before the maintenance window: [{key, value (wanted), actual (None: not found)}]."""
    actual: dict[str, Any] = {}
    for result in found.get("results", []):
        name = (result.get("item") or {}).get("key")
        resources = result.get("resources") or []
        actual[name] = (resources[0].get("spec") or {}).get("replicas") if resources else None
    return [{"key": name, "value": int(wanted), "actual": actual.get(name)}
            for name, wanted in saved.items() if actual.get(name) != int(wanted)]


# A smoke query naming a table or column the restored revision does not have cannot apply there.
_NOT_THERE = {"42P01": "its table does not exist", "42703": "its column does not exist"}


def smoke_verdicts(smoke: list[dict[str, Any]], revision: str | None) -> list[dict[str, Any]]:
    """Each smoke result, a failure on a table or column missing at ``revision`` marked not applicable."""
    out = []
    for entry in smoke or []:
        entry = dict(entry)
        if not entry.get("ok") and entry.get("sqlstate") in _NOT_THERE:
            entry["not_applicable"] = f"{_NOT_THERE[entry['sqlstate']]} at revision {revision or 'base'}"
        out.append(entry)
    return out


# --- approval pinned to the SQL ----------------------------------------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value.strip().lower()))


def sql_approval(revisions: list[dict[str, Any]], sql_sha256: str | None, approved: Any,
                 approved_revisions: dict[str, str] | None = None) -> dict[str, Any]:
    """Whether the SQL this run would apply is the SQL that was approved (``approved_sql_sha256``).

    ``approved_revisions`` ({revision: approval sha256} of the approved plan: the AWX artifact, or the
    preview record of that hash) lets a refusal name the revisions whose SQL changed."""
    listing = ", ".join(f"{e['revision']} {str(e.get('approval_sha256'))[:12]}" for e in revisions)
    how = (f"Review this run's SQL (a dry run prints it and saves preview.sql) and pass "
           f"-e approved_sql_sha256={sql_sha256} with -e approved_by=NAME")
    approved = str(approved or "").strip().lower()
    if not approved:
        return {"ok": False, "differing": [], "message": f"Production applies only SQL that was approved, and "
                f"approved_sql_sha256 is not set. This run's SQL has sha256 {sql_sha256} ({listing}). {how}."}
    if not is_sha256(approved):
        return {"ok": False, "differing": [], "message": f"approved_sql_sha256 '{approved[:70]}' is not a sha256 "
                f"(64 hexadecimal characters). {how}."}
    if approved == sql_sha256:
        return {"ok": True, "differing": [], "message": f"The SQL is the approved SQL (sha256 {approved})."}
    differing = _differing(revisions, approved_revisions or {})
    named = ("; ".join(f"{d['revision']} ({d['path'] or 'no file'}): {d['why']}" for d in differing)
             if differing else "which revision differs is unknown here (no record of the approved plan: "
             "pass the approved plan's record, as the AWX workflow does, or run where its preview was made)")
    return {"ok": False, "differing": differing, "message": (
        f"The SQL this run would apply (sha256 {sql_sha256}) is not the approved SQL (sha256 {approved}): "
        f"{named}. Nothing was changed. Review the change and have this SQL approved: {how}.")}


def _differing(revisions: list[dict[str, Any]], approved: dict[str, str]) -> list[dict[str, Any]]:
    if not approved:
        return []
    out = []
    for entry in revisions:
        want = approved.get(entry["revision"])
        if want is None:
            out.append({"revision": entry["revision"], "path": entry.get("path"), "why": "not in the approved plan"})
        elif want != entry.get("approval_sha256"):
            out.append({"revision": entry["revision"], "path": entry.get("path"),
                        "why": f"its SQL or its file changed (approved {want[:12]}, now "
                               f"{str(entry.get('approval_sha256'))[:12]})"})
    planned = {e["revision"] for e in revisions}
    out += [{"revision": rev, "path": None, "why": "approved, but not in this run's plan"}
            for rev in approved if rev not in planned]
    return out
