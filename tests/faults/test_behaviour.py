"""Behaviour an operator relies on: --check changes nothing in any playbook, `heads` works or is refused
before the backup, another database's backup is not restored over a database by accident, an ambiguous
revision prefix is called ambiguous, a restore blocked by other sessions says so, a missing kubeconfig
is named, and a run queued behind another that did the work reports it as up to date."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from ansible.module_utils.alembic_plan import Project, build_config, resolve_target, script_directory
from ansible.module_utils.alembic_runner import MigrationRequest, run
from ansible.module_utils.alembic_session import advisory_lock_key
from ansible.module_utils.backup_runner import BackupRequest, run_backup
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo
from ansible.module_utils.restore_runner import RestoreRequest, run_restore
from chain_copies import HEAD, branch_revision, chain_with
from support import ROOT, files_under, local_vars, reports, revision_of, run_playbook, sql

pytestmark = pytest.mark.db


def users(url: str) -> int:
    return sql(url, "SELECT count(*) FROM users")[0][0]


def schema_of(url: str) -> list:
    return sql(url, "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = 'public' ORDER BY 1, 2")


@pytest.mark.playbook
def test_check_mode_runs_every_playbook_to_the_end_and_changes_nothing(chain_db, workdir):
    url = chain_db(revision="8f1a2b3c4d5e", users=6)
    run_backup(BackupRequest(url=url, dest=str(workdir / "backups")))
    before = (revision_of(url), users(url), schema_of(url), [p.name for p in files_under(workdir / "backups")])
    database = ConnInfo.parse(url).dbname
    extra = {"migrate": {}, "rollback": {}, "backup": {}, "drill": {},
             "restore": {"backup_path": "latest", "confirm_restore": database}}
    for playbook, more in extra.items():
        result = run_playbook(f"playbooks/{playbook}.yml", env={"DATABASE_URL": url}, check=True,
                              extra_vars=local_vars(workdir, **more))
        assert result.rc == 0, f"{playbook} --check:\n{result.output[-3000:]}"
        report = reports(workdir / "reports")[-1]
        assert report["operation"] == playbook and report["outcome"] == "dry-run" and report["check_mode"]
    after = (revision_of(url), users(url), schema_of(url), [p.name for p in files_under(workdir / "backups")])
    assert after == before
    assert sql(url, "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (f"{database}\\_%",)) == [(0,)]


@pytest.mark.playbook
def test_every_head_is_migrated_when_the_target_is_heads(chain_db, workdir, tmp_path):
    url = chain_db(users=2)
    ini = chain_with(tmp_path / "chain", {
        "f00d00000a01_left.py": branch_revision("f00d00000a01", HEAD, "left_score"),
        "f00d00000b01_right.py": branch_revision("f00d00000b01", HEAD, "right_score"),
    })
    result = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                          extra_vars=local_vars(workdir, target_revision="heads"))
    assert result.rc == 0, result.output[-3000:]
    assert revision_of(url) == ["f00d00000a01", "f00d00000b01"]
    assert {"left_score", "right_score"} <= {row[1] for row in schema_of(url)}
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "migrated" and report["verify"]["schema_diff"] == []


def test_restoring_another_databases_backup_over_a_database_needs_its_name(chain_db, workdir):
    source, target = chain_db(users=3), chain_db(users=5)
    backup = run_backup(BackupRequest(url=source, dest=str(workdir)))
    with pytest.raises(OperatorError) as refused:
        run_restore(RestoreRequest(url=target, src=backup["path"], clean=True, confirm=True))
    assert "holds database" in refused.value.message and "source_database" in refused.value.hint
    assert users(target) == 5

    done = run_restore(RestoreRequest(url=target, src=backup["path"], clean=True, confirm=True,
                                      source_database=ConnInfo.parse(source).dbname))
    assert users(target) == 3
    assert any("holds database" in w for w in done["warnings"])


def test_an_ambiguous_revision_prefix_is_called_ambiguous_and_lists_the_matches(tmp_path):
    ini = chain_with(tmp_path / "chain", {
        "abcd00000001_one.py": branch_revision("abcd00000001", HEAD, "one"),
        "abcd00000002_two.py": branch_revision("abcd00000002", "abcd00000001", "two"),
    })
    script = script_directory(build_config(Project(config=str(ini))))
    with pytest.raises(OperatorError) as err:
        resolve_target(script, "abcd", ())
    assert "ambiguous" in err.value.message and "abcd00000001" in err.value.message
    assert "abcd00000002" in err.value.message and "not in the" not in err.value.message


def test_a_restore_blocked_by_other_sessions_says_so(chain_db, pg_server, workdir):
    owner, other = f"rm_own_{uuid.uuid4().hex[:6]}", f"rm_oth_{uuid.uuid4().hex[:6]}"
    source = chain_db(users=3)
    backup = run_backup(BackupRequest(url=source, dest=str(workdir)))
    pg_server.execute(f"CREATE ROLE {owner} LOGIN CREATEDB")
    pg_server.execute(f"CREATE ROLE {other} LOGIN")
    name = f"rm_blk_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
    owner_url = ConnInfo.parse(pg_server.url(name))
    session = psycopg2.connect(ConnInfo(user=other, password=None, host=owner_url.host, port=owner_url.port,
                                        dbname=name, params=owner_url.params).libpq_url)
    try:
        as_owner = ConnInfo(user=owner, password=None, host=owner_url.host, port=owner_url.port, dbname=name,
                            params=owner_url.params)
        with pytest.raises(OperatorError) as err:
            run_restore(RestoreRequest(url=as_owner.libpq_url, src=backup["path"], clean=True, confirm=True,
                                       source_database=ConnInfo.parse(source).dbname))
        assert "Other sessions" in err.value.hint and "CREATEDB" not in err.value.hint
        assert session.closed == 0
    finally:
        session.close()
        pg_server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg_server.execute(f"DROP ROLE IF EXISTS {owner}")
        pg_server.execute(f"DROP ROLE IF EXISTS {other}")


@pytest.mark.playbook
def test_a_missing_kubeconfig_is_named_not_one_or_more_items_failed(workdir, tmp_path):
    missing = tmp_path / "no-such-kubeconfig"
    result = run_playbook("playbooks/migrate.yml", inventory="inventories/staging",
                          env={"K8S_AUTH_KUBECONFIG": str(missing)},
                          extra_vars=local_vars(workdir, vault_rm_db_password="unused"))
    assert result.rc == 2
    failure = reports(workdir / "reports")[-1]["failure"]
    assert "One or more items failed" not in failure["msg"]
    assert "kube" in failure["msg"].lower() and "app: app=release-manager" in failure["msg"]


@pytest.mark.playbook
def test_a_run_queued_behind_another_that_did_the_work_reports_up_to_date(chain_db, workdir):
    url = chain_db(revision="8f1a2b3c4d5e", users=3)
    holder = psycopg2.connect(url)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (advisory_lock_key("alembic_version"),))
    outcome: list = []
    queued = threading.Thread(target=lambda: outcome.append(run_playbook(
        "playbooks/migrate.yml", env={"DATABASE_URL": url},
        extra_vars=local_vars(workdir, apply_advisory_lock_wait=120))))
    queued.start()
    try:
        deadline = time.monotonic() + 120
        while not list((workdir / "backups").glob("*.manifest.json")) and time.monotonic() < deadline:
            time.sleep(0.2)  # the queued run has taken its backup: it is waiting for the lock now
        time.sleep(1)
        run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), advisory_lock=False))  # the other run
    finally:
        holder.close()
    queued.join(timeout=300)
    assert outcome and outcome[0].rc == 0, outcome[0].output[-3000:] if outcome else "no result"
    report = json.loads(next(Path(workdir / "reports").rglob("report.json")).read_text())
    assert report["outcome"] == "up-to-date" and report["applied"] == []
    assert revision_of(url) == [HEAD]


def test_a_database_at_a_revision_the_chain_does_not_know_is_named_for_relative_targets(tmp_path):
    from ansible.module_utils.alembic_plan import Project, build_config, resolve_target, script_directory

    script = script_directory(build_config(Project(config=str(ROOT / "alembic.ini"))))
    with pytest.raises(OperatorError) as err:
        resolve_target(script, "-1", ("deadbeef0000",))
    assert "does not know" in err.value.message and "deadbeef0000" in err.value.message


@pytest.mark.playbook
def test_an_unwritable_reports_directory_says_no_report_was_written(chain_db, workdir):
    url = chain_db(users=1)
    result = run_playbook("playbooks/backup.yml", env={"DATABASE_URL": url},
                          extra_vars={"rm_backup_dir": str(workdir / "b"), "rm_reports_root": "/proc/no-reports-here"})
    assert result.rc == 2
    assert "No report could be written" in result.output and "Report: /proc/no-reports-here" not in result.output
    assert not (workdir / "b").exists()
