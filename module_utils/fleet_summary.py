"""The summary of a fleet run: each database's state (migrated, rolled back, never touched), wave by wave.

A fleet is one inventory host per database, run by migrate.yml in waves (Ansible's ``serial``) under a
failure budget per wave (``max_fail_percentage``). The summary is rewritten at the start and at the end
of every wave, so it exists however the run ends: hosts the waves have not reached (or never will, once
the budget stopped them) are listed as never touched. Each database's own report.json is the source of
its state; this module only gathers them. Pure functions, tested without Ansible (the ``fleet_summary``
action calls them and writes summary.json and summary.md).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any

NEVER_TOUCHED = "never-touched"
IN_PROGRESS = "in-progress"
_WAVE_ITEM = re.compile(r"^(\d+)(%?)$")
# How each outcome reads in the summary; the state is the outcome itself (as in each database's report).
LABELS = {
    "migrated": "migrated",
    "up-to-date": "already up to date",
    "dry-run": "dry run (nothing applied)",
    "rolled-back": "rolled back (rollback run)",
    "failed-rolled-back": "FAILED, rolled back to where it started",
    "failed": "FAILED",
    IN_PROGRESS: "in progress (or interrupted)",
    NEVER_TOUCHED: "never touched",
}


# --- waves and the failure budget, as Ansible computes them -------------------------------------------


def parse_waves(value: Any) -> list[int | str]:
    """``serial`` from ``rm_waves``: a list, or a comma-separated string (an AWX survey answer), of wave
    sizes: a number of databases or a percentage of the fleet (``[1, 5, "100%"]``). Empty: one wave."""
    if value is None or value == "" or value == []:
        return []
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    waves: list[int | str] = []
    for item in items:
        text = str(item).strip()
        match = _WAVE_ITEM.match(text)
        if isinstance(item, bool) or not match or int(match.group(1)) < 1 or (
                match.group(2) and int(match.group(1)) > 100):
            raise ValueError(f"rm_waves: {item!r} is not a wave size. Give a number of databases (at least 1) or a "
                             f"percentage of the fleet (1% to 100%), e.g. [1, 5, \"100%\"] or \"1, 25%\".")
        waves.append(text if match.group(2) else int(text))
    return waves


def checked_budget(value: Any) -> int | None:
    """``max_fail_percentage`` from ``rm_max_fail_percentage``: a whole number from 0 to 100 (None: no budget)."""
    if value is None or value == "":
        return None
    text = str(value).strip().removesuffix("%")
    if isinstance(value, bool) or not text.isdigit() or int(text) > 100:
        raise ValueError(f"rm_max_fail_percentage: {value!r} is not a failure budget. Give a whole number from 0 to "
                         "100: the percentage of a wave's databases that may fail before the waves stop (0: the "
                         "first failure stops them).")
    return int(text)


def wave_size(item: int | str, total: int) -> int:
    """Ansible's pct_to_int: a percentage of all the play's hosts (at least 1), or the number itself."""
    if isinstance(item, str) and item.endswith("%"):
        return int(int(item[:-1]) / 100.0 * total) or 1
    return int(item)


def play_order(hosts: list[str], order: str | None = "inventory") -> list[str]:
    """The hosts in the order the play takes them (its ``order`` keyword, rm_fleet_order)."""
    orders = {"inventory": list, "reverse_inventory": lambda h: list(reversed(h)), "sorted": sorted,
              "reverse_sorted": lambda h: sorted(h, reverse=True)}
    if (order or "inventory") not in orders:
        raise ValueError(f"rm_fleet_order: {order!r} leaves the canary to chance; use inventory (the inventory's "
                         "order, the default), sorted (by name), reverse_inventory or reverse_sorted.")
    return orders[order or "inventory"](list(hosts))


def plan_waves(hosts: list[str], waves: Any, order: str | None = "inventory") -> list[list[str]]:
    """The batches Ansible makes of ``hosts`` for ``serial: waves`` (the last size repeats), in the play's order."""
    sizes = parse_waves(waves) or [len(hosts) or 1]
    remaining, planned, index = play_order(hosts, order), [], 0
    while remaining:
        size = wave_size(sizes[min(index, len(sizes) - 1)], len(hosts))
        planned.append(remaining[:size])
        remaining = remaining[size:]
        index += 1
    return planned


def parse_budget(value: Any) -> float | None:
    """``max_fail_percentage`` as Ansible reads it (20, "20" or "20%"); None: no budget."""
    if value is None or value == "":
        return None
    return float(str(value).replace("%", ""))


def budget_exceeded(failed: int, size: int, max_fail_percentage: Any) -> bool:
    """Whether Ansible stops the waves after this one: more than the budget failed, or the whole wave."""
    if size <= 0 or failed <= 0:
        return False
    budget = parse_budget(max_fail_percentage)
    return failed == size or (budget is not None and failed / size > budget / 100.0)


# --- the summary ------------------------------------------------------------------------------------


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)) and not (isinstance(epoch, str) and epoch.replace(".", "", 1).isdigit()):
        return None
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(start: Any, end: Any) -> float | None:
    try:
        return round(float(end) - float(start), 1)
    except (TypeError, ValueError):
        return None


def _report_seconds(report: dict[str, Any]) -> float | None:
    try:
        parse = [datetime.strptime(report[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("started_at", "finished_at")]
    except (KeyError, TypeError, ValueError):
        return None
    return (parse[1] - parse[0]).total_seconds()


def database_entry(host: str, database: str | None, wave: int, record: dict | None,
                   report: dict | None) -> dict[str, Any]:
    """One database's line: its state from its report (or from the run's record when no report was written)."""
    if record is None:
        return {"host": host, "database": database, "wave": wave, "state": NEVER_TOUCHED, "report": None}
    report = report or {}
    outcome = report.get("outcome") or record.get("outcome") or "unknown"
    failure = report.get("failure") or {}
    rollback = report.get("rollback") or {}
    verify = report.get("verify") or {}
    before, after = report.get("revision_before"), report.get("revision_after")
    return {
        "host": host, "database": report.get("database") or database, "wave": wave, "state": outcome,
        "revision_before": before, "revision_after": after, "target_revision": report.get("target_revision"),
        "applied": report.get("applied") or [],
        "at_start_revision": before == after,
        "verified": outcome == "migrated" and bool(verify) and not verify.get("schema_diff"),
        "failure": ({"task": failure.get("task"), "msg": failure.get("msg"),
                     "failed_revision": failure.get("failed_revision")} if failure else None),
        "rollback": ({k: rollback.get(k) for k in ("method", "ok", "at_start_revision", "revision_after", "restored",
                                                   "applied")}
                     if rollback else None),
        "started_at": report.get("started_at"), "finished_at": report.get("finished_at"),
        "duration_s": _report_seconds(report),
        "report": (os.path.join(record["report_dir"], "report.md") if record.get("report_dir") else None),
    }


def _counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    return counts


def _failed(entries: list[dict[str, Any]]) -> int:
    return sum(1 for e in entries if str(e["state"]).startswith("failed"))


def _waves(hosts: list[str], spec: Any, started: list[dict[str, Any]], order: str | None) -> list[dict[str, Any]]:
    """The waves that started (in order, with the hosts Ansible gave them), then the planned waves not reached."""
    waves = [{"hosts": list(w.get("hosts") or []), "started_at": w.get("started_at")} for w in started]
    seen = {h for w in waves for h in w["hosts"]}
    rest = [[h for h in w if h not in seen] for w in plan_waves(hosts, spec, order)[len(waves):]]
    planned = {h for w in rest for h in w}
    left = [h for h in hosts if h not in seen and h not in planned]
    return waves + [{"hosts": w, "started_at": None} for w in [*rest, left] if w]


def _wave(number: int, wave: dict[str, Any], entries: list[dict[str, Any]], finished: list[float],
          budget: Any) -> dict[str, Any]:
    done = len(finished) == len(wave["hosts"])
    state = "never-run" if wave["started_at"] is None else "done" if done else "running"
    end = max(finished) if state == "done" and finished else None
    failed = _failed(entries)
    return {"wave": number, "hosts": wave["hosts"], "size": len(wave["hosts"]), "state": state,
            "started_at": _iso(wave["started_at"]), "finished_at": _iso(end),
            "duration_s": _seconds(wave["started_at"], end) if end is not None else None,
            "failed": failed, "counts": _counts(entries),
            "budget_exceeded": state == "done" and budget_exceeded(failed, len(wave["hosts"]), budget)}


def _status(waves: list[dict[str, Any]], budget: Any) -> tuple[str, str]:
    ran = [w for w in waves if w["state"] != "never-run"]
    waiting = [w["wave"] for w in waves if w["state"] == "never-run"]
    later = f"wave {waiting[0]}" if len(waiting) == 1 else f"waves {waiting[0]}-{waiting[-1]}" if waiting else ""
    if ran and ran[-1]["state"] == "running":
        return "running", f"wave {ran[-1]['wave']} of {len(waves)} is running (or was interrupted)"
    stopped = next((w for w in ran if w["budget_exceeded"]), None)
    if stopped and waiting:
        why = ("every database of the wave failed" if stopped["failed"] == stopped["size"]
               else f"over the failure budget (max_fail_percentage {parse_budget(budget):g}% of the wave)")
        return "stopped", (f"wave {stopped['wave']}: {stopped['failed']} of {stopped['size']} failed, {why}; "
                           f"{later} never ran")
    if waiting:
        return "running", f"{later} not run yet"
    return "finished", "every wave ran"


def build_summary(fleet: dict[str, Any], hosts: list[dict[str, Any]], started: list[dict[str, Any]],
                  records: list[dict[str, Any]], reports: dict[str, dict], now: float) -> dict[str, Any]:
    """The fleet summary. ``fleet``: run_id, environment, operation, target_revision, waves (rm_waves),
    max_fail_percentage, started_at (epoch), awx_job_id, awx_workflow_job_id. ``hosts``: the play's hosts in
    order, each {host, database}. ``started``: the waves that started, each {hosts, started_at}. ``records``:
    each finished host's {host, outcome, report_dir, finished_at}. ``reports``: each host's report.json.
    ``fleet["order"]``: the play's host order (rm_fleet_order; inventory by default)."""
    names = [h["host"] for h in hosts]
    databases = {h["host"]: h.get("database") for h in hosts}
    by_host = {r["host"]: r for r in records}
    budget = fleet.get("max_fail_percentage")
    waves, entries = [], []
    for number, wave in enumerate(_waves(names, fleet.get("waves"), started, fleet.get("order")), start=1):
        wave_entries = [database_entry(h, databases.get(h), number, by_host.get(h), reports.get(h))
                        for h in wave["hosts"]]
        if wave["started_at"] is not None:
            for entry in wave_entries:
                entry["state"] = IN_PROGRESS if entry["state"] == NEVER_TOUCHED else entry["state"]
        finished = [float(by_host[h]["finished_at"]) for h in wave["hosts"] if h in by_host]
        waves.append(_wave(number, wave, wave_entries, finished, budget))
        entries += wave_entries
    status, reason = _status(waves, budget)
    awx = {k: fleet.get(f"awx_{k}") for k in ("job_id", "workflow_job_id") if fleet.get(f"awx_{k}") is not None}
    return {
        "fleet_run_id": fleet.get("run_id"), "environment": fleet.get("environment"),
        "operation": fleet.get("operation") or "migrate", "target_revision": fleet.get("target_revision"),
        "status": status, "status_reason": reason, "dir": fleet.get("dir"),
        "started_at": _iso(fleet.get("started_at")), "updated_at": _iso(now),
        "elapsed_s": _seconds(fleet.get("started_at"), now),
        "waves_requested": parse_waves(fleet.get("waves")), "max_fail_percentage": parse_budget(budget),
        "awx": awx or None, "databases_total": len(entries), "counts": _counts(entries), "failed": _failed(entries),
        "waves": waves, "databases": entries,
    }


def load_reports(records: list[dict[str, Any]]) -> dict[str, dict]:
    """Each finished host's report.json (a host whose report is missing or unreadable gets none)."""
    reports: dict[str, dict] = {}
    for record in records:
        path = os.path.join(record.get("report_dir") or "", "report.json")
        if record.get("report_dir") and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    reports[record["host"]] = json.load(handle)
            except (OSError, ValueError):
                continue
    return reports


# --- Markdown --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return " ".join(str("—" if value in (None, "", []) else value).replace("|", "\\|").split())


def _tally(counts: dict[str, int]) -> str:
    order = [*LABELS, *sorted(set(counts) - set(LABELS))]
    return ", ".join(f"{counts[s]} {LABELS.get(s, s)}" for s in order if counts.get(s)) or "none"


def _head(s: dict[str, Any]) -> list[str]:
    budget = s.get("max_fail_percentage")
    waves = ", ".join(str(w) for w in s.get("waves_requested") or []) or "one wave"
    awx = s.get("awx") or {}
    rows = [("Databases", f"{s['databases_total']}: {_tally(s['counts'])}"),
            ("Waves", f"{waves}; failure budget: " + (f"more than {budget:g}% of a wave failed stops the waves"
                                                    if budget is not None else "none (only a wave that fails "
                                                    "entirely stops the waves)")),
            ("Target revision", f"`{s.get('target_revision') or 'head'}`"),
            ("Started / updated (UTC)", f"{s.get('started_at')} / {s.get('updated_at')} ({s.get('elapsed_s')} s)")]
    if awx:
        rows.append(("AWX", f"job {awx.get('job_id')}" + (f" (in workflow job {awx['workflow_job_id']}: a slice "
                                                          "runs its own waves over its share of the fleet)"
                                                          if awx.get("workflow_job_id") else "")))
    title = f"# Fleet {s['operation']} on {s['environment']}: **{str(s['status']).upper()}**"
    return [title + (f" with {s['failed']} failed" if s.get("failed") else ""), "",
            f"Fleet run `{s['fleet_run_id']}`: {s['status_reason']}.", "", "| | |", "|---|---|",
            *[f"| {k} | {_cell(v)} |" for k, v in rows], ""]


def _wave_rows(s: dict[str, Any]) -> list[str]:
    lines = ["## Waves", "| Wave | Databases | State | Started (UTC) | Finished (UTC) | Time (s) | Result |",
             "|---|---|---|---|---|---|---|"]
    for w in s["waves"]:
        state = {"never-run": "never ran", "running": "running"}.get(w["state"], "done")
        if w["budget_exceeded"]:
            state += ", **stopped the waves**"
        lines.append(f"| {w['wave']} | {w['size']} | {state} | {_cell(w['started_at'])} | {_cell(w['finished_at'])} "
                     f"| {_cell(w['duration_s'])} | {_tally(w['counts'])} |")
    return [*lines, ""]


def _attention(s: dict[str, Any]) -> list[str]:
    failed = [d for d in s["databases"] if str(d["state"]).startswith("failed") or d["state"] == IN_PROGRESS]
    if not failed:
        return []
    lines = ["## Needs attention"]
    for d in failed:
        where = (f"at `{d.get('revision_after') or 'base'}`, where it started" if d.get("at_start_revision")
                 else f"at `{d.get('revision_after') or 'base'}`, **NOT where it started "
                      f"(`{d.get('revision_before') or 'base'}`): act now**")
        if d["state"] == IN_PROGRESS:
            lines.append(f"- `{d['database']}` (host {d['host']}, wave {d['wave']}): no result yet; if the run "
                         "was interrupted, read its report and its revision before running again")
            continue
        failure = d.get("failure") or {}
        rollback = d.get("rollback") or {}
        undo = _undo(rollback)
        lines.append(f"- `{d['database']}` (host {d['host']}, wave {d['wave']}): failed at "
                     f"\"{failure.get('task', '?')}\": {_cell(failure.get('msg', '?')).rstrip('.')}. {undo}; now "
                     f"{where}. Report: `{d.get('report')}`")
    return [*lines, ""]


def _undo(rollback: dict[str, Any]) -> str:
    if not rollback:
        return "No rollback ran"
    if (rollback.get("method") or "downgrade") == "downgrade" and rollback.get("applied") == []:
        return "Nothing to roll back (the failed revision's own transaction undid it)"
    return f"Rolled back by {rollback.get('method') or 'downgrade'}" + ("" if rollback.get("ok") else " (FAILED)")


def _database_rows(s: dict[str, Any]) -> list[str]:
    lines = ["## Databases",
             "| Database | Host | Wave | State | Revision before → after | Verified | Time (s) | Report |",
             "|---|---|---|---|---|---|---|---|"]
    for d in s["databases"]:
        revisions = ("—" if d["state"] in (NEVER_TOUCHED, IN_PROGRESS)
                     else f"`{d.get('revision_before') or 'base'}` → `{d.get('revision_after') or 'base'}`")
        verified = "yes" if d.get("verified") else "—"
        state = LABELS.get(d["state"], d["state"])
        lines.append(f"| `{_cell(d.get('database'))}` | {d['host']} | {d['wave']} | {state} "
                     f"| {revisions} | {verified} | {_cell(d.get('duration_s'))} | {_cell(d.get('report'))} |")
    return [*lines, ""]


def render_markdown(summary: dict[str, Any]) -> str:
    parts = _head(summary) + _wave_rows(summary) + _attention(summary) + _database_rows(summary)
    parts.append("Machine-readable: `summary.json` beside this file; each database's own report is linked above.")
    return "\n".join(parts) + "\n"
