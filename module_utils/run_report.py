"""A run's report, for machines (report.json) and for people (report.md), from the facts each role left.

``build_report`` takes the roles' results (preflight, preview, backup, apply, verify, rollback,
restore, drill) and the run's outcome, and returns the report as plain JSON data; ``render_markdown``
turns that into the page an operator reads. Both are pure, so the report is tested against the
facts of a run without Ansible (the report role calls them through the ``run_report`` action).
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.backup_manifest import human_size

TOP_ROWS = 10


def _get(data: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(data, dict) or data.get(key) is None:
            return default
        data = data[key]
    return data


def _joined(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or None
    return value or None


def _backup(backup: dict | None) -> dict | None:
    if not backup or not backup.get("path"):
        return None
    keys = ("path", "size_bytes", "sha256", "duration_s", "format", "reused", "manifest_path", "alembic_revision",
            "reuse_refused")
    return {k: backup.get(k) for k in keys} | {"planned_only": backup.get("size_bytes") is None}


def _revision_after(f: dict[str, Any]) -> str | None:
    preflight = f.get("preflight") or {}
    if f.get("rollback"):
        return _joined(f["rollback"].get("revision_after"))
    if f.get("restore") and f["restore"].get("alembic_revision") is not None and not f["restore"].get("planned"):
        return _joined(f["restore"]["alembic_revision"])
    if f.get("verify"):
        return _joined(f["verify"].get("revision"))
    if f.get("failure") and f["failure"].get("revision_left") is not None:
        return _joined(f["failure"]["revision_left"])
    if f.get("apply") and f["apply"].get("to_revision") is not None:
        return _joined(f["apply"]["to_revision"])
    return preflight.get("start_revision") or None


def _database_work_s(f: dict[str, Any]) -> float:
    """Seconds the run's modules spent in the database; the rest of the wall time is orchestration."""
    parts = [_get(f, "backup", "duration_s"), _get(f, "preflight", "inspect", "duration_s"),
             _get(f, "preflight", "plan", "duration_s"), _get(f, "preview", "duration_s"),
             _get(f, "apply", "duration_s"), _get(f, "verify", "duration_s"),
             _get(f, "rollback", "duration_s"), _get(f, "restore", "duration_s")]
    return round(sum(float(p) for p in parts if isinstance(p, (int, float))), 3)


def _sql(pre: dict[str, Any]) -> dict[str, Any] | None:
    """The SQL the run previewed, per revision, and whether it was the approved SQL (without the SQL itself:
    that is in preview.sql and sql/ beside the report)."""
    if not pre.get("revisions"):
        return None
    keys = ("revision", "path", "approval_sha256", "pinned_to", "downgrade")
    return {"sha256": pre.get("sql_sha256"), "error": pre.get("sql_error"), "approval": pre.get("sql_approval"),
            "revisions": [{k: e.get(k) for k in keys} for e in pre["revisions"]]}


def _preview_parts(preview: dict[str, Any] | None) -> dict[str, Any]:
    """The preview's lint, way back and app queries, each a section of its own."""
    parts = ("lint", "way_back", "queries", "round_trips")
    return {"preview": {k: v for k, v in preview.items() if k not in parts} if preview else None,
            "lint": (preview or {}).get("lint"), "way_back": (preview or {}).get("way_back") or [],
            "app_queries": (preview or {}).get("queries")}


def build_report(f: dict[str, Any]) -> dict[str, Any]:
    """The report of one run. ``f`` holds: outcome, environment, finished_at, and the roles' results
    (preflight, preview, backup, apply, verify, rollback, restore, drill), failure, writers_error,
    kubernetes, awx_job_id, app_pod_log."""
    pre = f.get("preflight") or {}
    apply = f.get("apply") or {}
    failure = f.get("failure") or None
    applied = apply.get("applied") or (failure or {}).get("applied") or []
    steps = apply.get("steps") or (failure or {}).get("steps") or []
    verify = f.get("verify") or None
    restore = f.get("restore") or None
    report = {
        "outcome": f.get("outcome") or "unknown",
        "operation": pre.get("operation", "?"),
        "environment": f.get("environment"),
        "database": pre.get("database", "?"),
        "server": pre.get("where", "?"),
        "report_dir": pre.get("report_dir"),
        "operator": pre.get("operator") or "unknown",
        "approved_by": pre.get("approved_by") or None,
        "approval_source": pre.get("approval_source") or None,
        "awx_job_id": f.get("awx_job_id"),
        "started_at": pre.get("started_at"),
        "finished_at": f.get("finished_at"),
        "dry_run": bool(pre.get("dry_run")),
        "check_mode": bool(pre.get("check_mode")),
        "kubernetes": f.get("kubernetes") or None,
        "revision_before": pre.get("start_revision") or None,
        "target_revision": pre.get("target_revision") or None,
        "revision_after": _revision_after(f),
        "pending": pre.get("pending") or [],
        "applied": applied,
        "steps": steps,
        "apply_duration_s": apply.get("duration_s"),
        "lock_retries_used": apply.get("lock_retries_used"),
        "database_work_s": _database_work_s(f),
        "backup": _backup(f.get("backup")),
        **_preview_parts(f.get("preview")),
        "sql": _sql(pre),
        "checksums": {"before": pre.get("checksums"),
                      "after": apply.get("checksums") or (failure or {}).get("checksums")},
        "verify": verify,
        "failure": failure,
        "writers_error": f.get("writers_error") or None,
        "rollback": f.get("rollback") or None,
        # From the failure to the database back where it started (or not): the downtime of a failed migration.
        "recovery_s": _get(f, "rollback", "recovery_s"),
        "restore": ({k: restore.get(k) for k in ("src", "duration_s", "restore_duration_s", "alembic_revision",
                                                  "row_counts", "backup_database", "planned", "refusal")}
                    if restore and restore.get("src") else None),
        "row_counts_before": _get(pre, "inspect", "row_counts"),
        "row_counts_after": (_get(verify, "row_counts") or _get(f, "rollback", "row_counts")
                             or _get(restore, "row_counts")),
        "monitoring_before": _get(pre, "inspect", "monitoring"),
        "monitoring_after": _get(verify, "monitoring"),
        "app_pod_log": f.get("app_pod_log") or None,
        "drill": f.get("drill") or None,
        "models": {"reference": _get(f, "preview", "models"), "live": _get(verify, "models")},
    }
    return report


# --- Markdown ------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return str("—" if value in (None, "", []) else value).replace("|", "\\|").replace("\n", " ")


def _size(value: Any) -> str:
    return human_size(value) if isinstance(value, (int, float)) else "?"


def _summary(r: dict[str, Any]) -> list[str]:
    lines = [f"# {str(r['operation']).capitalize()} of `{r['database']}` on {r['environment']}: "
             f"**{str(r['outcome']).upper()}**", "", "| | |", "|---|---|"]
    operator = r["operator"] + (f" (AWX job {r['awx_job_id']})" if r.get("awx_job_id") else "")
    approved = (r.get("approved_by") or "—") + (f" ({r['approval_source']})" if r.get("approval_source") else "")
    rows = [("Operator", operator), ("Approved by", approved),
            ("Started / finished (UTC)", f"{r.get('started_at')} / {r.get('finished_at')}"),
            ("Server", f"`{r['server']}`")]
    if r.get("kubernetes"):
        k = r["kubernetes"]
        rows.append(("Kubernetes", f"namespace `{k.get('namespace')}`, app pod `{k.get('app_pod')}`"))
    rows.append(("Revision before", f"`{r.get('revision_before') or 'base'}`"))
    if r["operation"] in ("migrate", "rollback"):
        rows += [("Target revision", f"`{r.get('target_revision') or 'base'}`"),
                 ("Pending at start", ", ".join(r["pending"]) or "none"),
                 ("Applied", ", ".join(r["applied"]) or "none")]
    rows += [("Revision after", f"`{r.get('revision_after') or 'base'}`"),
             ("Time in the database", f"{r['database_work_s']} s")]
    if r.get("dry_run"):
        check = " (check mode)" if r.get("check_mode") else ""
        rows.append(("Dry run", f"yes: preview only, nothing applied{check}"))
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows]
    return lines + [""]


def _failure_and_rollback(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if r.get("writers_error"):
        lines += ["## WRITERS STILL DOWN", r["writers_error"], ""]
    failure = r.get("failure")
    if failure:
        lines += ["## What failed", f"- Step: **{failure.get('task')}**", f"- Error: {failure.get('msg')}"]
        if failure.get("hint"):
            lines.append(f"- Fix: {failure['hint']}")
        if failure.get("failed_revision"):
            lines.append(f"- Failed revision: `{failure['failed_revision']}`; the database was left at "
                         f"`{failure.get('revision_left') or 'base'}`")
        lines.append("")
    rollback = r.get("rollback")
    if rollback:
        ok = "succeeded" if rollback.get("ok") else f"failed: {rollback.get('error')}"
        lines += ["## Rollback", f"- Method: {rollback.get('method')} ({ok})"]
        if rollback.get("method") == "restore-tables" and rollback.get("ok"):
            lines.append(f"- Restored from the backup: {', '.join(rollback.get('tables') or [])}; every other table "
                         f"kept its writes. The replaced tables (and those the plan created: "
                         f"{', '.join(rollback.get('moved_aside') or []) or 'none'}) are kept in schema "
                         f"`{rollback.get('replaced_schema')}`; drop it when no longer needed. Swap: "
                         f"{rollback.get('swap_s')} s.")
        if rollback.get("restored"):
            lines.append("- The downgrade failed; the pre-change backup was restored.")
        if rollback.get("recovery_s") is not None:
            steps = [f"{k.replace('_duration_s', '').replace('duration_s', rollback.get('method') or 'rollback')} "
                     f"{rollback[k]} s" for k in ("duration_s", "restore_duration_s") if rollback.get(k) is not None]
            lines.append(f"- Recovery time (from the failure to the database back): **{rollback['recovery_s']} s**"
                         f"{' (' + ', '.join(steps) + ')' if steps else ''}")
        where = ("the revision the run started from" if rollback.get("at_start_revision")
                 else "NOT the revision the run started from")
        counts = "equal to" if rollback.get("row_counts_match") else "DIFFERENT from"
        lines += [f"- The database now stands at `{rollback.get('revision_after') or 'base'}` ({where}), row counts "
                  f"{counts} those before the run.", ""]
    return lines


def _steps(r: dict[str, Any]) -> list[str]:
    lines = ["## Steps", "| Step | Duration (s) | Detail |", "|---|---|---|"]
    b = r.get("backup")
    if b:
        detail = (f"`{b['path']}` ({_size(b.get('size_bytes'))}, {b.get('format')}"
                  f"{', reused' if b.get('reused') else ''}{', planned only' if b.get('planned_only') else ''}), "
                  f"sha256 `{b.get('sha256')}`")
        lines.append(f"| Backup | {_cell(b.get('duration_s'))} | {detail} |")
    p = r.get("preview")
    if p:
        counts = (r.get("lint") or {}).get("counts") or {}
        lines.append(f"| Preview | {_cell(p.get('duration_s'))} | `{p.get('sql_path')}`, lint: "
                     f"{counts.get('error', 0)} error(s), {counts.get('warn', 0)} warning(s) |")
    for s in r.get("steps") or []:
        lines.append(f"| Apply {s.get('revision')} ({s.get('direction')}) | {_cell(s.get('duration_s'))} | "
                     f"{_cell(s.get('description'))} |")
    rs = r.get("restore")
    if rs:
        verb = "Would restore" if rs.get("planned") else "Restore"
        lines.append(f"| {verb} | {_cell(rs.get('duration_s'))} | from `{rs.get('src')}`, revision "
                     f"{_cell(rs.get('alembic_revision'))} |")
    v = r.get("verify")
    if v:
        if not v.get("schema_checked"):
            schema = "not compared"
        elif v.get("schema_diff"):
            schema = "DIFFERS: " + "; ".join(v["schema_diff"])
        else:
            schema = "matches the revision"
        lines.append(f"| Verify | {_cell(v.get('duration_s'))} | revision `{_joined(v.get('revision')) or 'base'}`, "
                     f"schema {_cell(schema)} |")
    return lines + [""]


def _drill(r: dict[str, Any]) -> list[str]:
    d = r.get("drill")
    if not d:
        return []
    lines = [f"## Drill: **{d.get('verdict', 'FAIL')}**",
             f"- Backup: `{d.get('backup', '?')}` (manifest revision `{d.get('manifest_revision', '?')}`, "
             f"restored at `{d.get('restored_revision', '?')}`)",
             f"- Why this backup: {d.get('backup_reason', 'the newest verified backup')}",
             f"- Time to restore (recovery time): {d.get('restore_s', '?')} s"]
    for s in d.get("steps") or []:
        lines.append(f"- {s.get('name')}: {', '.join(s.get('applied') or []) or 'nothing to run'} "
                     f"({s.get('duration_s')} s)")
    if "schema_diff" in d:
        lines.append("- Schema after the round trip: " + ("identical" if not d["schema_diff"]
                                                           else "; ".join(d["schema_diff"])))
    for s in d.get("smoke") or []:
        state = "ok" if s.get("ok") else ("not applicable: " + s["not_applicable"] if s.get("not_applicable")
                                          else "**FAILED**: " + str(s.get("error")))
        lines.append(f"- Smoke `{s.get('query')}` → {s.get('result')} ({state})")
    if d.get("scratch_created") is False:
        lines.append("- Scratch database: not created")
    else:
        lines.append(f"- Scratch database dropped: {'yes' if d.get('scratch_dropped') else 'NO'}")
    return lines + [""]


def _models_line(label: str, models: dict | None) -> str | None:
    if not models:
        return None
    if not models.get("checked"):
        return f"- {label}: {models.get('reason') or 'not checked'}"
    accepted = models.get("accepted") or []
    note = f" (accepted after review: {'; '.join(accepted)})" if accepted else ""
    if models.get("diffs"):
        return f"- {label}: **DIFFERS** ({models.get('policy')}): {'; '.join(models['diffs'])}{note}"
    return f"- {label}: match{note}"


def _models(r: dict[str, Any]) -> list[str]:
    models = r.get("models") or {}
    lines = [line for line in (_models_line("Target revision's schema (before the backup)", models.get("reference")),
                               _models_line("Live database after the change", models.get("live"))) if line]
    return ["## The app's models (`alembic check`)", *lines, ""] if lines else []


def _sql_section(r: dict[str, Any]) -> list[str]:
    sql = r.get("sql")
    if not sql:
        return []
    lines = ["## The SQL", f"- sha256 of the plan: `{sql.get('sha256')}` (`sql/SHA256SUMS` beside this report)"]
    approval = sql.get("approval") or {}
    if approval:
        verdict = "matches" if approval.get("ok") else "**DOES NOT MATCH**"
        lines.append(f"- Approved SQL: `{approval.get('approved_sql_sha256') or 'none given'}` ({verdict})")
        lines += [f"  - `{d['revision']}` ({d.get('path') or '—'}): {d['why']}"
                  for d in approval.get("differing") or []]
    if sql.get("error"):
        lines.append(f"- {sql['error']}: each revision is pinned to its file")
    lines += ["", "| Revision | File | sha256 | Pinned to | Downgrade |", "|---|---|---|---|---|"]
    lines += [f"| `{e['revision']}` | {_cell(e.get('path'))} | `{str(e.get('approval_sha256'))[:16]}…` | "
              f"{_cell(e.get('pinned_to'))} | {_cell(e.get('downgrade'))} |" for e in sql.get("revisions") or []]
    return lines + [""]


def _findings(r: dict[str, Any]) -> list[str]:
    lint = r.get("lint") or {}
    findings = [f for f in lint.get("findings") or [] if f.get("severity") != "info" or f.get("accepted")]
    if not lint:
        return []
    counts = lint.get("counts") or {}
    lines = ["## Migration lint (squawk " + str(lint.get("squawk_version")) + " and release-migrations' rules)",
             f"- {counts.get('error', 0)} error(s), {counts.get('warn', 0)} warning(s), {counts.get('info', 0)} "
             f"note(s) (in lint.json); blocking severities: {', '.join(lint.get('blocking_severities') or [])}"]
    lines += [f"- Accepted after review: `{f['accepted']}` ({f.get('why')})" for f in lint.get("accepted") or []]
    if lint.get("unused_accepts"):
        lines.append(f"- Exceptions that matched nothing: {', '.join(lint['unused_accepts'])}")
    if findings:
        lines += ["", "| Severity | Rule | Revision | Line | Statement | Why | Safe pattern |",
                  "|---|---|---|---|---|---|---|"]
        for f in findings:
            severity = "accepted" if f.get("accepted") else ("**BLOCKS**" if f.get("blocking") else f.get("severity"))
            statement = _cell((f.get("statement") or "")[:80])
            lines.append(f"| {severity} | {_cell(f.get('rule'))} ({f.get('source')}) | `{f.get('revision')}` | "
                         f"{_cell(f.get('line'))} | `{statement}` | {_cell(f.get('why'))} | {_cell(f.get('fix'))} |")
    return lines + [""]


_CHECKSUM_CHANGES = (
    ("recorded", "Recorded for the revisions applied"),
    ("backfilled", "Recorded for revisions applied before checksums were kept"),
    ("accepted", "Edited files accepted after review"),
    ("removed", "Removed for revisions no longer applied"),
)


def _way_back(r: dict[str, Any]) -> list[str]:
    plan = r.get("way_back") or []
    if not plan:
        return []
    lines = ["## The way back, per revision (decided before apply)",
             "| Revision | Kind | Why | Way back |", "|---|---|---|---|"]
    for e in plan:
        proven = "" if e.get("proven") else " (not proven on a scratch database)"
        lines.append(f"| `{e['revision']}` | {e.get('kind')}{proven} | {_cell(e.get('why'))} | "
                     f"**{(e.get('way_back') or {}).get('method')}**: {_cell((e.get('way_back') or {}).get('why'))} |")
    return lines + [""]


def _app_queries(r: dict[str, Any]) -> list[str]:
    if not (q := r.get("app_queries")):
        return []
    sources = q.get("sources") or {}
    lines = ["## The running app's queries against the new schema",
             f"- {q.get('checked', 0)} query(ies) checked with PREPARE after each revision "
             f"({sources.get('stat_statements', 0)} from pg_stat_statements"
             f"{' - ' + sources['stat_statements_unread'] if sources.get('stat_statements_unread') else ''}; "
             f"files: {', '.join(sources.get('files') or []) or 'none'})"]
    lines += [f"- **BROKEN by `{b['revision']}`**: `{b['query']}` - {b['error']}" for b in q.get("broken") or []]
    if q.get("not_checkable"):
        lines.append(f"- {len(q['not_checkable'])} query(ies) do not prepare before the migration either (not checked)")
    return lines + [""]


def _checksums(r: dict[str, Any]) -> list[str]:
    before, after = (r.get("checksums") or {}).get("before"), (r.get("checksums") or {}).get("after")
    if not before and not after:
        return []
    lines = ["## Revision checksums (kept in the version table's comment)"]
    for e in (before or {}).get("edited") or []:
        lines.append(f"- **EDITED since applied**: `{e['revision']}` ({e.get('path')}): recorded "
                     f"`{str(e.get('recorded'))[:16]}…`, file now `{str(e.get('actual'))[:16]}…`")
    if before and before.get("missing"):
        lines.append(f"- Applied before checksums were kept: {len(before['missing'])} revision(s)")
    if after:
        for key, label in _CHECKSUM_CHANGES:
            if after.get(key):
                lines.append(f"- {label}: {', '.join(after[key])}")
        if after.get("reason"):
            lines.append(f"- Not written: {after['reason']}")
    elif before:
        lines.append(f"- {before.get('matching', 0)} applied revision(s) match their recorded checksum")
    return lines + [""]


def _smoke_and_counts(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    smoke = _get(r, "verify", "smoke") or []
    if smoke:
        lines.append("## Smoke queries")
        for s in smoke:
            failed = "" if s.get("ok") else f" **FAILED** {s.get('error')}"
            lines.append(f"- `{s.get('query')}` → {s.get('result')}{failed}")
        lines.append("")
    before, after = r.get("row_counts_before") or {}, r.get("row_counts_after") or {}
    if before or after:
        lines += ["## Row counts", "| Table | Before | After |", "|---|---|---|"]
        lines += [f"| {t} | {_cell(before.get(t))} | {_cell(after.get(t))} |" for t in sorted(set(before) | set(after))]
        lines.append("")
    return lines


def _monitoring(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for label in ("before", "after"):
        snap = r.get(f"monitoring_{label}")
        if not snap:
            continue
        lines += [f"## Monitoring snapshot {label}",
                  f"- Connections: {snap.get('connections') or {}}",
                  f"- Lock waits: {len(snap.get('lock_waits') or [])}"]
        top = snap.get("top_statements")
        if top:
            lines.append("- Top statements by mean time: " + "; ".join(
                f"`{(q.get('query') or '')[:60]}` {q.get('mean_exec_ms')} ms × {q.get('calls')}"
                for q in top[:TOP_ROWS]))
        else:
            lines.append("- pg_stat_statements: not available on this server")
        sizes = snap.get("table_sizes") or []
        lines.append("- Largest tables: " + ("; ".join(f"{t.get('table')} {_size(t.get('total_bytes'))}"
                                                      for t in sizes[:TOP_ROWS]) or "none"))
        lines.append("")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    parts = (_summary(report) + _failure_and_rollback(report) + _steps(report) + _drill(report) + _models(report)
             + _sql_section(report) + _findings(report) + _way_back(report) + _app_queries(report)
             + _checksums(report) + _smoke_and_counts(report)
             + _monitoring(report))
    if report.get("app_pod_log"):
        parts += [f"App pod log: `{report['app_pod_log']}`", ""]
    parts.append("Machine-readable: `report.json` beside this file.")
    return "\n".join(parts) + "\n"


def write_files(directory: str, files: dict[str, Any], mode: int = 0o640) -> list[str]:
    """Write each file of a run's report directory atomically (temporary name, then rename)."""
    import os
    import tempfile

    os.makedirs(directory, mode=0o750, exist_ok=True)
    written = []
    for name, content in files.items():
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ValueError(f"'{name}' is not a plain file name")
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("" if content is None else str(content))
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, os.path.join(directory, name))
        written.append(os.path.join(directory, name))
    return written
