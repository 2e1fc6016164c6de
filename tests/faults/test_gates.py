"""Gates hold: a rollback only goes down, a name cannot write outside its directory, the maintenance window
(also across midnight) and the free-space check stop a run before anything changes, and so does a preview
with SQL PostgreSQL cannot run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chain_copies import CONCURRENT_IN_TRANSACTION_REVISION, chain_copy
from support import ROOT, files_under, local_vars, reports, revision_of, run_playbook, sql

pytestmark = [pytest.mark.db, pytest.mark.playbook]

HEAD = "9c2b3f1a4e5d"


def production_vars(url: str, workdir: Path, **extra) -> dict:
    """The production inventory, pointed at a local database instead of the cluster."""
    return {"vault_rm_db_password": "not-used-locally", "rm_database_url": url, "rm_alembic_url": url,
            "rm_alembic_config": str(ROOT / "alembic.ini"), "rm_kubernetes": False, **local_vars(workdir), **extra}


def test_rollback_never_goes_up_even_when_approved(chain_db, workdir):
    url = chain_db(revision="4d3f6b8c0e54", users=3)
    run = run_playbook("playbooks/rollback.yml", inventory="inventories/production",
                       extra_vars=production_vars(url, workdir, approved_by="alice", rollback_to="head"))
    assert run.rc == 2
    assert "a rollback only goes down" in run.output
    assert revision_of(url) == ["4d3f6b8c0e54"]
    assert not (workdir / "backups").exists()
    assert not list((workdir / "reports").rglob("last-success.json"))
    assert reports(workdir / "reports")[-1]["outcome"] == "failed"


def test_a_database_name_cannot_write_outside_the_reports_and_backup_directories(pg_server, workdir):
    name = f"../../../rm-escape-{uuid.uuid4().hex[:8]}"  # reports/local/<name> would be beside workdir
    pg_server.execute(f'CREATE DATABASE "{name}"')
    try:
        run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": pg_server.url(name)},
                           extra_vars=local_vars(workdir))
        assert run.rc == 0, run.output[-3000:]
        escaped = name.rsplit("/", 1)[1]
        assert not list(workdir.parent.glob(f"{escaped}*")) and not list(Path("/tmp").glob(f"{escaped}*"))
        written = files_under(workdir)
        roots = [(workdir / "reports" / "local").resolve(), (workdir / "backups").resolve()]
        assert written and all(any(p.resolve().is_relative_to(r) for r in roots) for p in written)
        assert [p for p in written if p.name == "last-success.json"]
        assert [p for p in written if p.parent == workdir / "backups" and p.name.endswith(".sql.gz")]
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def window(start: datetime, end: datetime) -> dict:
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def test_a_maintenance_window_across_midnight_opens_and_a_closed_one_changes_nothing(chain_db, workdir):
    url = chain_db(revision="8f1a2b3c4d5e", users=3)
    now = datetime.now(UTC)
    # Starts in 2 h and ends in 1 h: it spans midnight and holds the present.
    spanning = window(now + timedelta(hours=2), now + timedelta(hours=1))
    opened = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url},
                          extra_vars=local_vars(workdir, preflight_maintenance_window=spanning, dry_run=True))
    assert opened.rc == 0, opened.output[-3000:]
    assert "ends the next day" not in opened.output  # the gate passed quietly

    closed = window(now + timedelta(hours=1), now + timedelta(hours=2))
    refused = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url},
                           extra_vars=local_vars(workdir, preflight_maintenance_window=closed))
    assert refused.rc == 2
    assert "outside the maintenance window" in refused.output
    assert revision_of(url) == ["8f1a2b3c4d5e"]
    assert not (workdir / "backups").exists()


def test_too_little_free_space_for_the_backup_changes_nothing(chain_db, workdir):
    url = chain_db(revision="8f1a2b3c4d5e", users=3)
    run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url},
                       extra_vars=local_vars(workdir, preflight_free_space_factor=10**12))
    assert run.rc == 2
    assert "needs about" in run.output and "free" in run.output
    assert revision_of(url) == ["8f1a2b3c4d5e"]
    assert not (workdir / "backups").exists()


def test_a_preview_with_sql_postgresql_cannot_run_stops_before_the_backup(chain_db, workdir, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", CONCURRENT_IN_TRANSACTION_REVISION)
    run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                       extra_vars=local_vars(workdir))
    assert run.rc == 2
    assert "CONCURRENTLY" in run.output and "Nothing was changed" in run.output
    assert revision_of(url) == [HEAD]
    assert sql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'users_name_idx'") == [(0,)]
    assert not (workdir / "backups").exists()
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "failed" and report["rollback"] is None
    assert [f for f in report["lint_findings"] if f["severity"] == "error"]


def test_a_run_whose_database_moved_while_it_waited_applies_nothing(chain_db, workdir):
    """A rollback planned at head waits for the lock while another run goes down further: never back up."""
    import threading
    import time

    import psycopg2
    from ansible.module_utils.alembic_runner import MigrationRequest, run
    from ansible.module_utils.alembic_session import advisory_lock_key

    url = chain_db(users=3)
    holder = psycopg2.connect(url)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key("alembic_version"),))
    outcome: list = []
    queued = threading.Thread(target=lambda: outcome.append(run_playbook(
        "playbooks/rollback.yml", env={"DATABASE_URL": url},
        extra_vars=local_vars(workdir, rollback_to="8f1a2b3c4d5e", apply_advisory_lock_wait=120))))
    queued.start()
    try:
        deadline = time.monotonic() + 120
        while not list((workdir / "backups").glob("*.manifest.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), revision="5e4a7c9d1f65",
                             allow_downgrade=True, advisory_lock=False))  # the other run, further down
    finally:
        holder.close()
    queued.join(timeout=300)
    assert outcome and outcome[0].rc == 2
    assert "The database moved while this run waited" in outcome[0].output
    assert revision_of(url) == ["5e4a7c9d1f65"]  # not taken up to 8f1a2b3c4d5e


def test_no_revision_starts_after_the_maintenance_window_closed(chain_db):
    from ansible.module_utils.alembic_runner import MigrationRequest, run
    from ansible.module_utils.operator_error import OperatorError

    url = chain_db(revision="8f1a2b3c4d5e", users=2)
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(OperatorError, match="end of the maintenance window"):
        run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), not_after=past))
    assert revision_of(url) == ["8f1a2b3c4d5e"]


def test_rollback_steps_zero_is_refused_not_taken_as_one(chain_db, workdir):
    url = chain_db(users=2)
    result = run_playbook("playbooks/rollback.yml", env={"DATABASE_URL": url},
                          extra_vars=local_vars(workdir, rollback_steps=0))
    assert result.rc == 2 and "at least 1" in result.output
    assert revision_of(url) == [HEAD]
