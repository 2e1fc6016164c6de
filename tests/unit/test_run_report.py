"""report.json and report.md built from a run's facts (module_utils/run_report.py), field by field."""

from __future__ import annotations

from ansible.module_utils.run_report import build_report, render_markdown, write_files

PREFLIGHT = {
    "operation": "migrate", "database": "release_manager", "where": "postgresql://app:********@db/release_manager",
    "report_dir": "/r/production/release_manager/20261127T120000Z-migrate", "operator": "alice",
    "approved_by": "carol", "approval_source": "awx-approval", "started_at": "2026-11-27T12:00:00Z",
    "dry_run": False, "check_mode": False, "start_revision": "8f1a2b3c4d5e", "target_revision": "9c2b3f1a4e5d",
    "pending": ["9c2b3f1a4e5d"], "plan": {"duration_s": 0.5},
    "inspect": {"duration_s": 0.25, "row_counts": {"users": 10}, "monitoring": {
        "connections": {"active": 2}, "lock_waits": [],
        "top_statements": [{"query": "SELECT * FROM users WHERE id = $1", "mean_exec_ms": 1.25, "calls": 40}],
        "table_sizes": [{"table": "users", "total_bytes": 16384}]}},
}
APPLY = {"applied": ["9c2b3f1a4e5d"], "duration_s": 1.0, "lock_retries_used": 1, "to_revision": "9c2b3f1a4e5d",
         "steps": [{"revision": "9c2b3f1a4e5d", "direction": "up", "duration_s": 0.9, "description": "user roles"}]}
BACKUP = {"path": "/b/release_manager-20261127T120001Z-pre_migrate.sql.gz", "size_bytes": 2048, "sha256": "ab" * 32,
          "duration_s": 2.0, "format": "plain", "reused": False, "manifest_path": "/b/x.manifest.json"}
VERIFY = {"revision": "9c2b3f1a4e5d", "schema_diff": [], "schema_checked": True, "duration_s": 0.75,
          "smoke": [{"query": "SELECT COUNT(*) FROM users", "ok": True, "result": 10}],
          "row_counts": {"users": 10, "user_roles": 0}, "monitoring": None}


LINT = {"counts": {"error": 0, "warn": 1, "info": 0}, "squawk_version": "2.70.0", "blocking_severities": ["error"],
        "blocking": [], "unused_accepts": [], "statements": 4,
        "accepted": [{"revision": "9c2b3f1a4e5d", "rule": "require-concurrent-index-creation", "severity": "error",
                      "accepted": "9c2b:require-concurrent-index-creation", "why": "blocks writes", "line": 3,
                      "statement": "CREATE INDEX ix ON users (name)", "fix": "CONCURRENTLY", "source": "squawk",
                      "blocking": False}],
        "findings": [{"revision": "9c2b3f1a4e5d", "rule": "ban-drop-table", "severity": "warn", "source": "squawk",
                      "why": "Dropping a table deletes its rows", "fix": "Stop reading it first", "line": 7,
                      "statement": "DROP TABLE legacy", "accepted": None, "blocking": False}]}
SQL_PREFLIGHT = {
    "sql_sha256": "cd" * 32, "sql_approval": {"approved_sql_sha256": "cd" * 32, "ok": True, "differing": []},
    "revisions": [{"revision": "9c2b3f1a4e5d", "path": "alembic/versions/9c2b.py", "approval_sha256": "ef" * 32,
                   "pinned_to": "sql", "downgrade": "ok", "sql": "BEGIN; CREATE TABLE user_roles (...); COMMIT;"}],
    "checksums": {"matching": 6, "missing": [], "edited": [{"revision": "8f1a2b3c4d5e",
                  "path": "alembic/versions/8f1a.py", "recorded": "aa" * 32, "actual": "bb" * 32}]},
}


def facts(**extra):
    return {"outcome": "migrated", "environment": "production", "finished_at": "2026-11-27T12:01:00Z",
            "awx_job_id": 4242, "preflight": PREFLIGHT, "apply": APPLY, "backup": BACKUP, "verify": VERIFY,
            "preview": {"sql_path": "/r/preview.sql", "lint": LINT},
            **extra}


def test_the_json_report_carries_the_runs_facts():
    report = build_report(facts())
    assert report["outcome"] == "migrated" and report["approved_by"] == "carol"
    assert report["approval_source"] == "awx-approval" and report["awx_job_id"] == 4242
    assert (report["revision_before"], report["target_revision"], report["revision_after"]) == (
        "8f1a2b3c4d5e", "9c2b3f1a4e5d", "9c2b3f1a4e5d")
    assert report["applied"] == ["9c2b3f1a4e5d"] and report["steps"][0]["duration_s"] == 0.9
    assert report["backup"]["sha256"] == "ab" * 32 and report["backup"]["planned_only"] is False
    assert report["database_work_s"] == 2.0 + 0.25 + 0.5 + 1.0 + 0.75
    assert report["row_counts_before"] == {"users": 10} and report["row_counts_after"]["user_roles"] == 0
    assert report["lint"]["findings"][0]["rule"] == "ban-drop-table"


def test_the_markdown_report_shows_what_an_operator_checks():
    md = render_markdown(build_report(facts()))
    assert md.startswith("# Migrate of `release_manager` on production: **MIGRATED**")
    assert "| Approved by | carol (awx-approval) |" in md and "AWX job 4242" in md
    assert f"sha256 `{'ab' * 32}`" in md and "2.0 KiB" in md
    assert "| Apply 9c2b3f1a4e5d (up) | 0.9 | user roles |" in md
    assert "schema matches the revision" in md
    assert "`SELECT * FROM users WHERE id = $1` 1.25 ms × 40" in md  # pg_stat_statements' mean_exec_ms
    assert "| users | 10 | 10 |" in md and "Dropping a table deletes its rows" in md
    assert "Accepted after review: `9c2b:require-concurrent-index-creation`" in md
    assert "password" not in md.lower() or "********" in md


def test_a_failure_and_its_rollback_are_told_plainly():
    report = build_report(facts(
        outcome="failed-rolled-back", verify=None, apply=None,
        failure={"task": "Apply", "msg": "Revision f2 failed", "hint": "Fix the migration", "failed_revision": "f2",
                 "revision_left": "f1", "applied": ["f1"], "steps": []},
        rollback={"method": "downgrade", "ok": True, "revision_after": "8f1a2b3c4d5e", "at_start_revision": True,
                  "row_counts_match": True, "restored": False, "row_counts": {"users": 10}, "recovery_s": 2.5,
                  "duration_s": 1.75}))
    assert report["revision_after"] == "8f1a2b3c4d5e" and report["applied"] == ["f1"]
    assert report["recovery_s"] == 2.5
    md = render_markdown(report)
    assert "Recovery time (from the failure to the database back): **2.5 s** (downgrade 1.75 s)" in md
    assert "## What failed" in md and "- Fix: Fix the migration" in md and "left at `f1`" in md
    assert "(the revision the run started from), row counts equal to those before the run" in md


def test_writers_still_down_and_a_dry_run_are_visible():
    md = render_markdown(build_report(facts(writers_error="WRITERS STILL DOWN: worker", outcome="failed")))
    assert "## WRITERS STILL DOWN\nWRITERS STILL DOWN: worker" in md
    dry = build_report(facts(outcome="dry-run", apply=None, verify=None, backup=None,
                             preflight={**PREFLIGHT, "dry_run": True, "check_mode": True}))
    assert dry["backup"] is None and "yes: preview only, nothing applied (check mode)" in render_markdown(dry)


def test_a_drill_report_names_the_backup_and_why():
    drill = {"verdict": "PASS", "backup": "/b/x.sql.gz", "backup_reason": "the newest verified backup at 9c2b",
             "manifest_revision": "9c2b", "restored_revision": "9c2b", "restore_s": 1.5, "scratch_dropped": True,
             "steps": [{"name": "up to head", "applied": [], "duration_s": 0.1}], "schema_diff": [],
             "smoke": [{"query": "SELECT 1 FROM gone", "ok": False, "not_applicable": "table gone is not there"}]}
    md = render_markdown(build_report(facts(outcome="drill-passed", drill=drill,
                                            preflight={**PREFLIGHT, "operation": "drill"})))
    assert "## Drill: **PASS**" in md and "Why this backup: the newest verified backup at 9c2b" in md
    assert "not applicable: table gone is not there" in md and "Scratch database dropped: yes" in md


def test_report_files_are_written_atomically(tmp_path):
    written = write_files(str(tmp_path / "r"), {"a.md": "x", "b.json": "{}"})
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["a.md", "b.json"]
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]


def test_the_sql_its_approval_and_the_checksums_are_in_the_report_without_the_sql_itself():
    report = build_report(facts(preflight={**PREFLIGHT, **SQL_PREFLIGHT},
                                apply={**APPLY, "checksums": {"recorded": ["9c2b3f1a4e5d"], "backfilled": ["1a0c"],
                                                              "accepted": [], "removed": [], "written": True}}))
    assert report["sql"]["sha256"] == "cd" * 32 and report["sql"]["approval"]["ok"] is True
    assert "sql" not in report["sql"]["revisions"][0] and report["sql"]["revisions"][0]["pinned_to"] == "sql"
    assert report["checksums"]["before"]["edited"][0]["revision"] == "8f1a2b3c4d5e"
    md = render_markdown(report)
    assert f"sha256 of the plan: `{'cd' * 32}`" in md and "(matches)" in md
    assert "**EDITED since applied**: `8f1a2b3c4d5e` (alembic/versions/8f1a.py)" in md
    assert "Recorded for the revisions applied: 9c2b3f1a4e5d" in md
    assert "Recorded for revisions applied before checksums were kept: 1a0c" in md


def test_an_sql_approval_that_does_not_match_names_the_revision():
    pre = {**PREFLIGHT, **SQL_PREFLIGHT, "sql_approval": {
        "approved_sql_sha256": "00" * 32, "ok": False,
        "differing": [{"revision": "9c2b3f1a4e5d", "path": "alembic/versions/9c2b.py", "why": "its SQL changed"}]}}
    md = render_markdown(build_report(facts(preflight=pre, outcome="failed")))
    assert "**DOES NOT MATCH**" in md and "`9c2b3f1a4e5d` (alembic/versions/9c2b.py): its SQL changed" in md
