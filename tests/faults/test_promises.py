"""The README's promises, each with a fault that would break it: a failed downgrade falls back to the
backup, a failed verification rolls back, rollback_to lands where asked, writers that cannot come back are
reported, statement_timeout cancels a revision, a non-default version table is used everywhere, and the
AWX approver reaches report.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from ansible.module_utils.alembic_runner import MigrationRequest, run
from ansible.module_utils.backup_runner import BackupRequest, run_backup
from ansible.module_utils.db_inspect import inspect_database
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo
from chain_copies import BROKEN_REVISION, HEAD, SLOW_REVISION, UNDOWNGRADABLE_REVISION, chain_copy
from support import ROOT, local_vars, reports, revision_of, run_module, run_playbook, sql

pytestmark = pytest.mark.db

STANDINS = ROOT / "tests" / "standins"


def users(url: str) -> int:
    return sql(url, "SELECT count(*) FROM users")[0][0]


@pytest.mark.playbook
def test_a_failed_downgrade_falls_back_to_restoring_the_backup(chain_db, workdir, tmp_path):
    url = chain_db(users=9)
    ini = chain_copy(tmp_path / "chain", UNDOWNGRADABLE_REVISION, BROKEN_REVISION)
    result = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                          extra_vars=local_vars(workdir))
    assert result.rc == 2
    assert revision_of(url) == [HEAD] and users(url) == 9
    assert sql(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'nickname'") == [(0,)]
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "failed-rolled-back"
    assert report["rollback"]["ok"] is False and report["rollback"]["restored"] is True
    assert "restoring the backup" in result.output


@pytest.mark.playbook
@pytest.mark.parametrize("fault", ["failing smoke query", "schema differs from the revision"])
def test_a_failed_verification_rolls_the_migration_back(fault, chain_db, workdir):
    url = chain_db(revision="5e4a7c9d1f65", users=4)
    extra = local_vars(workdir)
    if fault == "failing smoke query":
        extra["verify_smoke_queries"] = ["SELECT no_such_column FROM users"]
    else:
        sql(url, "CREATE TABLE stray_table (id int)")  # the live schema will not match the revision's
    result = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url}, extra_vars=extra)
    assert result.rc == 2
    assert revision_of(url) == ["5e4a7c9d1f65"] and users(url) == 4
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "failed-rolled-back" and "Require the target revision" in report["failure"]["task"]
    assert report["rollback"]["method"] == "downgrade" and report["rollback"]["ok"]


@pytest.mark.playbook
def test_rollback_to_lands_on_the_revision_asked_for(chain_db, workdir):
    url = chain_db(users=3)
    result = run_playbook("playbooks/rollback.yml", env={"DATABASE_URL": url},
                          extra_vars=local_vars(workdir, rollback_to="3c2e5a7b9d43"))
    assert result.rc == 0, result.output[-3000:]
    assert revision_of(url) == ["3c2e5a7b9d43"]
    assert sql(url, "SELECT to_regclass('user_roles')") == [(None,)]
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "rolled-back" and report["backup"]["sha256"]


@pytest.mark.playbook
def test_writers_that_cannot_be_scaled_back_are_reported_and_fail_the_play(chain_db, workdir, tmp_path):
    sys.path.insert(0, str(STANDINS))
    from k8s_api import K8sApiStandin

    url = chain_db(revision="8f1a2b3c4d5e", users=3)
    seed = {
        "pods": [{"name": "release-manager-1", "namespace": "staging", "labels": {"app": "release-manager"},
                  "phase": "Running", "ready": True},
                 {"name": "db-0", "namespace": "staging", "labels": {"app": "db-staging"}, "phase": "Running"}],
        "deployments": [{"name": "release-manager", "namespace": "staging", "replicas": 2},
                        {"name": "release-manager-worker", "namespace": "staging", "replicas": 3,
                         "refuse_scale_up": True}],
    }
    with K8sApiStandin(seed) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace="staging")
        env = {"DATABASE_URL": url, "K8S_AUTH_KUBECONFIG": str(kubeconfig),
               "PATH": f"{STANDINS / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
               "KUBECTL_STANDIN_LOG": str(tmp_path / "kubectl.log")}
        result = run_playbook("playbooks/migrate.yml", inventory="molecule/kubernetes/inventory", env=env,
                              extra_vars=local_vars(workdir, maintenance_mode=True))
        worker = api.deployment("staging", "release-manager-worker")
    assert result.rc == 2
    assert "WRITERS STILL DOWN: release-manager-worker" in result.output
    assert "kubectl -n staging scale deployment/release-manager-worker --replicas=3" in " ".join(result.output.split())
    assert worker["spec"]["replicas"] == 0
    assert revision_of(url) == [HEAD]  # the migration itself went through
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "failed" and "WRITERS STILL DOWN" in report["writers_error"]
    md = Path(report["report_dir"], "report.md").read_text()
    assert "## WRITERS STILL DOWN" in md


def test_statement_timeout_cancels_a_slow_revision_and_leaves_the_last_good_one(chain_db, tmp_path):
    url = chain_db(users=1)
    ini = chain_copy(tmp_path / "chain", SLOW_REVISION)
    with pytest.raises(OperatorError) as err:
        run(MigrationRequest(url=url, config=str(ini), statement_timeout="300ms"))
    assert "statement timeout" in err.value.message
    assert err.value.details["revision_left"] == HEAD and err.value.details["failed_revision"] == "f00d00000001"
    assert revision_of(url) == [HEAD]


def test_a_non_default_version_table_is_used_by_every_step(new_database, workdir):
    url = new_database("vt")
    result = run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), version_table="rm_versions"))
    assert result["to_revision"] == HEAD
    assert sql(url, "SELECT version_num FROM rm_versions") == [(HEAD,)]
    assert sql(url, "SELECT to_regclass('alembic_version')") == [(None,)]
    again = run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), version_table="rm_versions"))
    assert again["changed"] is False
    backup = run_backup(BackupRequest(url=url, dest=str(workdir), version_table="rm_versions"))
    manifest = json.loads(Path(backup["manifest_path"]).read_text())
    assert manifest["alembic_revision"] == HEAD
    facts = inspect_database(ConnInfo.parse(url), version_table="rm_versions")
    assert facts["revision"] == [HEAD] and "rm_versions" not in facts["row_counts"]


@pytest.mark.playbook
def test_the_awx_approver_is_written_into_report_json(chain_db, workdir):
    sys.path.insert(0, str(ROOT / "tests"))
    from standins.awx_api import AwxApiStandin

    url = chain_db(revision="8f1a2b3c4d5e", users=3)
    database = ConnInfo.parse(url).dbname
    staging = workdir / "reports" / "staging" / database
    staging.mkdir(parents=True)
    (staging / "last-success.json").write_text(json.dumps({"revision": HEAD}))
    # What staging's migrate job handed on (set_stats) for the same plan: the SQL production may run.
    plan = run_module("alembic_migrate", {"url": url, "config": str(ROOT / "alembic.ini")}, check=True).result
    handed_on = {"approved_sql_sha256": plan["sql_sha256"],
                 "approved_sql_revisions": {e["revision"]: e["approval_sha256"] for e in plan["revisions"]}}
    with AwxApiStandin(project_root=ROOT, users={"carol": "carol-pw", "reader": "reader-pw"},
                       tokens={"reader-token": "reader"}) as awx:
        job = awx.add_workflow_job(approvals=[{"name": "approve-production", "status": "successful",
                                               "approver": "carol"}], artifacts=handed_on)
        env = {"CONTROLLER_HOST": awx.url, "CONTROLLER_OAUTH_TOKEN": "reader-token", "CONTROLLER_VERIFY_SSL": "false"}
        result = run_playbook("playbooks/migrate.yml", inventory="inventories/production", env=env, extra_vars={
            "vault_rm_db_password": "unused", "rm_database_url": url, "rm_alembic_url": url,
            "rm_alembic_config": str(ROOT / "alembic.ini"), "rm_kubernetes": False, "awx_workflow_job_id": job,
            "awx_job_id": 4242, **local_vars(workdir)})
    assert result.rc == 0, result.output[-3000:]
    report = [r for r in reports(workdir / "reports") if r["environment"] == "production"][-1]
    assert (report["approved_by"], report["approval_source"], report["awx_job_id"]) == ("carol", "awx-approval", 4242)
    assert report["sql"]["approval"] == {"approved_sql_sha256": plan["sql_sha256"], "ok": True, "differing": [],
                                         "source": "awx-workflow"}
    assert revision_of(url) == [HEAD]
