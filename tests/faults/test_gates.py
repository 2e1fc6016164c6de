"""Gates hold: a rollback only goes down, a name cannot write outside its directory, the maintenance window
(also across midnight) and the free-space check stop a run before anything changes, and so does a preview
with SQL PostgreSQL cannot run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chain_copies import CONCURRENT_IN_TRANSACTION_REVISION, GOOD_REVISION, chain_copy
from runbook_revisions import DANGEROUS
from support import ROOT, files_under, local_vars, reports, revision_of, run_playbook, sql

pytestmark = [pytest.mark.db, pytest.mark.playbook]

HEAD = "9c2b3f1a4e5d"
REVISION_FILE = "alembic/versions/f00d00000001_test.py"


def edit_revision(chain: Path) -> None:
    path = chain / REVISION_FILE
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(500)"))


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
        roots = [(workdir / "reports" / "local").resolve(), (workdir / "backups").resolve(),
                 (workdir / "reports" / "sql-previews").resolve()]  # named by the SQL's sha256
        assert written and all(any(p.resolve().is_relative_to(r) for r in roots) for p in written)
        assert [p for p in written if p.name == "last-success.json"]
        assert [p for p in written if p.parent.parent == workdir / "backups" and p.parent.name.endswith(".bin")]
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
    assert [f["rule"] for f in report["lint"]["blocking"]] == ["ban-concurrent-index-creation-in-transaction"]


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


def test_a_revision_edited_after_its_sql_was_approved_is_refused_naming_it(chain_db, workdir, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION)
    env = {"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)}
    gates = local_vars(workdir, preflight_require_sql_approval=True, approved_by="carol")

    unapproved = run_playbook("playbooks/migrate.yml", env=env, extra_vars=gates)
    assert unapproved.rc == 2 and "approved_sql_sha256 is not set" in unapproved.output
    sha = reports(workdir / "reports")[-1]["sql"]["sha256"]
    assert f"-e approved_sql_sha256={sha}" in unapproved.output  # the refusal says what to review and approve
    assert revision_of(url) == [HEAD] and not (workdir / "backups").exists()
    record = json.loads((workdir / "reports" / "sql-previews" / f"{sha}.json").read_text())
    assert list(record["revisions"]) == ["f00d00000001"]

    edit_revision(tmp_path / "chain")  # after the approval: the hash no longer matches; the refusal names it
    refused = run_playbook("playbooks/migrate.yml", env=env, extra_vars={**gates, "approved_sql_sha256": sha})
    assert refused.rc == 2, refused.output
    assert f"f00d00000001 ({REVISION_FILE}): its SQL or its file changed" in " ".join(refused.output.split())
    assert revision_of(url) == [HEAD] and not (workdir / "backups").exists()
    report = reports(workdir / "reports")[-1]
    assert report["sql"]["approval"]["ok"] is False and report["outcome"] == "failed"

    approved = report["sql"]["sha256"]  # the edited SQL, reviewed and approved in its turn
    ran = run_playbook("playbooks/migrate.yml", env={**env, "ANSIBLE_SHOW_CUSTOM_STATS": "true"},
                       extra_vars={**gates, "approved_sql_sha256": approved})
    assert ran.rc == 0, ran.output
    # What an AWX workflow's next node gets from this run (set_stats): the SQL it ran.
    assert f"approved_sql_sha256: {approved}" in ran.output
    assert revision_of(url) == ["f00d00000001"]
    final = reports(workdir / "reports")[-1]
    assert final["outcome"] == "migrated" and final["sql"]["approval"] == {
        "approved_sql_sha256": approved, "ok": True, "differing": [], "source": "extra-var"}
    # The approval can be checked by hand: each revision's SQL and file against SHA256SUMS, and its sha256.
    sums = Path(final["report_dir"]) / "sql"
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=sums, capture_output=True, text=True)
    assert checked.returncode == 0 and "f00d00000001.py: OK" in checked.stdout, checked.stdout + checked.stderr
    assert hashlib.sha256((sums / "SHA256SUMS").read_bytes()).hexdigest() == approved


def test_a_lint_error_stops_production_before_the_backup_and_a_reviewed_exception_lets_it_through(
        chain_db, workdir, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", DANGEROUS["index-without-concurrently"][1])
    gates = production_vars(url, workdir, rm_alembic_config=str(ini), approved_by="carol", rm_models_check="off",
                            preflight_require_staging_revision=False, preflight_require_sql_approval=False)
    refused = run_playbook("playbooks/migrate.yml", inventory="inventories/production", extra_vars=gates)
    assert refused.rc == 2
    assert "f00d00000001 (alembic/versions/f00d00000001_test.py) line" in refused.output
    assert "[require-concurrent-index-creation]" in refused.output and "Nothing was changed" in refused.output
    assert revision_of(url) == [HEAD] and not (workdir / "backups").exists()
    assert [f["rule"] for f in reports(workdir / "reports")[-1]["lint"]["blocking"]] == [
        "require-concurrent-index-creation"]

    exception = "f00d00000001:require-concurrent-index-creation"
    ran = run_playbook("playbooks/migrate.yml", inventory="inventories/production",
                       extra_vars={**gates, "rm_lint_accept": [exception]})
    assert ran.rc == 0, ran.output
    assert revision_of(url) == ["f00d00000001"]
    report = reports(workdir / "reports")[-1]
    assert [f["accepted"] for f in report["lint"]["accepted"]] == [exception]
    md = next((workdir / "reports").glob(f"production/*/{Path(report['report_dir']).name}/report.md")).read_text()
    assert f"Accepted after review: `{exception}`" in md


def test_an_applied_revision_edited_later_stops_production_and_warns_elsewhere(chain_db, workdir, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION)
    env = {"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)}
    assert run_playbook("playbooks/migrate.yml", env=env, extra_vars=local_vars(workdir)).rc == 0
    edit_revision(tmp_path / "chain")

    warned = run_playbook("playbooks/migrate.yml", env=env, extra_vars=local_vars(workdir))
    said = " ".join(warned.output.split())  # the callback wraps long messages
    assert warned.rc == 0 and "WARNING: 1 applied revision file(s) changed since they were applied" in said
    assert f"f00d00000001 ({REVISION_FILE})" in said

    refused = run_playbook("playbooks/migrate.yml", env=env,
                           extra_vars=local_vars(workdir, preflight_refuse_edited_revisions=True))
    assert refused.rc == 2 and "refuses to run until the files are restored as applied" in refused.output
    edited = reports(workdir / "reports")[-1]["checksums"]["before"]["edited"]
    assert [e["revision"] for e in edited] == ["f00d00000001"]
    assert revision_of(url) == ["f00d00000001"]
