"""migrate.yml end to end with the real ansible-playbook on a real PostgreSQL: the local inventory's
main job, its idempotence, the dry run, the reports, and production's gates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import ROOT, local_vars, reports, revision_of, run_playbook, with_database

pytestmark = [pytest.mark.db, pytest.mark.playbook]


def recap_changed(output: str) -> int:
    match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", output)
    assert match, f"no play recap in:\n{output[-3000:]}"
    return int(match.group(1))


def test_migrate_to_head_then_second_run_changes_nothing(new_database, workdir):
    url = new_database("mig")
    first = run_playbook("playbooks/migrate.yml", extra_vars=local_vars(workdir), env={"DATABASE_URL": url})
    assert first.rc == 0, first.output[-4000:]
    head = revision_of(url)
    assert head == ["9c2b3f1a4e5d"]

    second = run_playbook("playbooks/migrate.yml", extra_vars=local_vars(workdir), env={"DATABASE_URL": url})
    assert second.rc == 0, second.output[-4000:]
    assert recap_changed(second.output) == 0
    assert revision_of(url) == head

    first_report, second_report = reports(workdir / "reports")
    assert first_report["outcome"] == "migrated"
    assert first_report["revision_before"] is None and first_report["revision_after"] == head[0]
    assert first_report["applied"][-1] == "9c2b3f1a4e5d"
    assert Path(first_report["backup"]["path"]).exists()
    assert len(first_report["backup"]["sha256"]) == 64
    assert first_report["verify"]["schema_diff"] == []
    assert second_report["outcome"] == "up-to-date"
    assert second_report["applied"] == []
    run_dir = Path(first_report["report_dir"])
    for name in ("report.md", "report.json", "preview.sql", "lint.json"):
        assert (run_dir / name).is_file(), name
    preview = (run_dir / "preview.sql").read_text()
    assert "CREATE TABLE users" in preview
    assert "9c2b3f1a4e5d" in preview
    # report.md tells what report.json and the database say
    md = (run_dir / "report.md").read_text()
    assert "**MIGRATED**" in md and f"| Revision after | `{head[0]}` |" in md
    assert first_report["backup"]["path"] in md and first_report["backup"]["sha256"] in md
    assert all(f"| Apply {rev} (up) |" in md for rev in first_report["applied"])
    assert len(first_report["applied"]) == 7 and first_report["steps"][0]["revision"] == "1a0c3e5f7b21"
    assert first_report["row_counts_after"] == {"deployments": 0, "releases": 0, "user_roles": 0, "users": 0}
    assert "| users | — | 0 |" in md


def test_dry_run_saves_the_preview_and_changes_nothing(new_database, workdir):
    url = new_database("dry")
    run = run_playbook("playbooks/migrate.yml", extra_vars=local_vars(workdir, dry_run=True), env={"DATABASE_URL": url})
    assert run.rc == 0, run.output[-4000:]
    assert revision_of(url) == []
    (report,) = reports(workdir / "reports")
    assert report["outcome"] == "dry-run"
    assert report["pending"][-1] == "9c2b3f1a4e5d"
    assert report["backup"] in (None, {})
    assert "CREATE TABLE" in (Path(report["report_dir"]) / "preview.sql").read_text()
    assert not (workdir / "backups").exists() or not any((workdir / "backups").iterdir())


def production_vars(url: str, workdir: Path, **extra) -> dict:
    """The production inventory, pointed at a local database instead of the cluster."""
    return {
        "vault_rm_db_password": "not-used-locally",
        "rm_database_url": url,
        "rm_alembic_url": url,
        "rm_alembic_config": str(ROOT / "alembic.ini"),
        "rm_kubernetes": False,
        **local_vars(workdir),
        **extra,
    }


def test_production_without_approval_changes_nothing(new_database, workdir):
    url = new_database("prod")
    run = run_playbook("playbooks/migrate.yml", inventory="inventories/production",
                       extra_vars=production_vars(url, workdir))
    assert run.rc != 0
    assert "needs an approval" in run.output
    assert "approved_by" in run.output
    assert revision_of(url) == []
    assert not (workdir / "backups").exists() or not any((workdir / "backups").iterdir())


def test_production_refuses_a_revision_staging_has_not_run_then_accepts_it(pg_server, workdir):
    name = "gate_" + workdir.name[-8:].replace("-", "_").lower()
    url = with_database(pg_server.admin_url, name)
    pg_server.execute(f'DROP DATABASE IF EXISTS "{name}"')
    pg_server.execute(f'CREATE DATABASE "{name}"')
    try:
        refused = run_playbook("playbooks/migrate.yml", inventory="inventories/production",
                               extra_vars=production_vars(url, workdir, approved_by="alice"))
        assert refused.rc != 0
        assert "has not been applied on staging" in refused.output
        assert revision_of(url) == []

        # Staging runs first (the staging inventory, also pointed at a local database of the same
        # name) and leaves its record; then production passes the gate.
        staging = run_playbook("playbooks/migrate.yml", inventory="inventories/staging",
                               extra_vars=production_vars(url, workdir))
        assert staging.rc == 0, staging.output[-4000:]
        pg_server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        pg_server.execute(f'CREATE DATABASE "{name}"')

        # The SQL staging ran (its report's sha256) is what production was approved for.
        staging_sql = [r for r in reports(workdir / "reports") if r["environment"] == "staging"][-1]["sql"]["sha256"]
        accepted = run_playbook("playbooks/migrate.yml", inventory="inventories/production",
                                extra_vars=production_vars(url, workdir, approved_by="alice",
                                                           approved_sql_sha256=staging_sql))
        assert accepted.rc == 0, accepted.output[-4000:]
        assert revision_of(url) == ["9c2b3f1a4e5d"]
        production_report = [r for r in reports(workdir / "reports") if r["environment"] == "production"][-1]
        assert production_report["approved_by"] == "alice"
        assert production_report["outcome"] == "migrated"
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_run_blocked_by_another_operator_fails_without_rolling_back_their_work(new_database, workdir):
    import psycopg2
    from ansible.module_utils.alembic_session import advisory_lock_key

    url = new_database("busy")
    holder = psycopg2.connect(url)  # "another operator" mid-migration: holds the migration lock
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key("alembic_version"),))
    try:
        run = run_playbook("playbooks/migrate.yml", extra_vars=local_vars(workdir), env={"DATABASE_URL": url})
    finally:
        holder.close()
    assert run.rc != 0
    assert "Another migration is running" in run.output
    assert revision_of(url) == []
    (report,) = reports(workdir / "reports")
    assert report["outcome"] == "failed"
    assert report["rollback"] is None  # nothing of ours to undo, and never a restore over their run
    assert report["backup"]["sha256"]
