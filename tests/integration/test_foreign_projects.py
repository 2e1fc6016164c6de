"""alembic_migrate on Alembic projects that are not ours, their env.py and revisions as shipped
(tests/foreign_projects.py): optuna (enum types, a one-transaction env.py, a downgrade broken upstream),
mlflow (67 revisions) and an async app on asyncpg whose env.py reads the app's own settings.

Each plan runs as `alembic upgrade heads` runs it; the results are checked with SQL.
"""

from __future__ import annotations

import os

import pytest
from ansible.module_utils.alembic_runner import MigrationRequest, run
from ansible.module_utils.backup_runner import BackupRequest, run_backup
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo
from ansible.module_utils.restore_runner import RestoreRequest, run_restore
from foreign_projects import (
    MLFLOW_ENV,
    OPTUNA_HEAD,
    async_app,
    mlflow_initial_tables,
    mlflow_project,
    optuna_ini,
)
from support import revision_of, run_module, sql

pytestmark = pytest.mark.db

OPTUNA_CHAIN = ["v0.9.0.a", "v1.2.0.a", "v1.3.0.a", "v2.4.0.a", "v2.6.0.a", "v3.0.0.a", "v3.0.0.b", "v3.0.0.c",
                "v3.0.0.d", "v3.2.0.a"]


def enums(url: str) -> list[str]:
    return [row[0] for row in sql(url, "SELECT typname FROM pg_type WHERE typtype = 'e' ORDER BY 1")]


def optuna(url: str, revision: str = "heads", **kw) -> dict:
    return run(MigrationRequest(url=url, config=str(optuna_ini()), revision=revision, **kw))


def test_optunas_chain_applies_in_one_run_as_alembic_upgrade_heads_does(new_database):
    """Revision by revision, v2.4.0.a would re-create an enum type v0.9.0.a made; in one run it does not."""
    url = new_database("optuna")
    result = optuna(url)
    assert result["applied"] == OPTUNA_CHAIN and [s["revision"] for s in result["steps"]] == OPTUNA_CHAIN
    assert all(s["duration_s"] >= 0 and s["direction"] == "up" for s in result["steps"])
    assert revision_of(url) == [OPTUNA_HEAD]
    assert enums(url) == ["studydirection", "trialintermediatevaluetype", "trialstate", "trialvaluetype"]
    again = optuna(url)
    assert again["changed"] is False and again["applied"] == []


def test_optunas_broken_downgrade_is_reported_truthfully_and_the_rest_works(new_database, workdir, target_db):
    url = new_database("optuna")
    optuna(url)
    with pytest.raises(OperatorError) as err:  # v3.0.0.c's downgrade is broken upstream
        optuna(url, "-3", allow_downgrade=True)
    details = err.value.details
    assert details["failed_revision"] == "v3.0.0.c" and details["revision_left"] == OPTUNA_HEAD
    assert details["applied"] == [] and details["rolled_back"] == ["v3.2.0.a", "v3.0.0.d"]
    assert "rolled back" in err.value.message and revision_of(url) == [OPTUNA_HEAD]

    down = optuna(url, "-2", allow_downgrade=True)
    assert down["applied"] == ["v3.2.0.a", "v3.0.0.d"] and revision_of(url) == ["v3.0.0.c"]
    assert optuna(url)["applied"] == ["v3.0.0.d", "v3.2.0.a"] and revision_of(url) == [OPTUNA_HEAD]

    backup = run_backup(BackupRequest(url=url, dest=str(workdir)))
    copy = target_db()
    run_restore(RestoreRequest(url=copy, src=backup["path"], source_database=ConnInfo.parse(url).dbname))
    assert optuna(copy)["changed"] is False and revision_of(copy) == [OPTUNA_HEAD]


def test_mlflows_long_chain_goes_up_down_and_up_and_survives_a_backup(new_database, workdir, target_db,
                                                                      monkeypatch):
    for key, value in MLFLOW_ENV.items():
        monkeypatch.setenv(key, value)
    ini, migrations = mlflow_project()
    chain = {"config": str(ini), "script_location": str(migrations)}
    url = new_database("mlflow")
    mlflow_initial_tables(url)  # what mlflow itself does to a fresh database before its chain
    up = run(MigrationRequest(url=url, **chain))
    head = up["to_revision"]
    assert len(up["applied"]) >= 60 and len(up["steps"]) == len(up["applied"]) and revision_of(url) == [head]
    assert run(MigrationRequest(url=url, **chain))["changed"] is False

    down = run(MigrationRequest(url=url, revision="-10", allow_downgrade=True, **chain))
    assert len(down["applied"]) == 10 and revision_of(url) == [down["to_revision"]] != [head]
    assert len(run(MigrationRequest(url=url, **chain))["applied"]) == 10 and revision_of(url) == [head]

    backup = run_backup(BackupRequest(url=url, dest=str(workdir), format="custom"))
    copy = target_db()
    run_restore(RestoreRequest(url=copy, src=backup["path"], source_database=ConnInfo.parse(url).dbname))
    assert run(MigrationRequest(url=copy, **chain))["changed"] is False and revision_of(copy) == [head]


@pytest.mark.playbook
def test_the_module_runs_a_foreign_chain_through_ansible(new_database):
    url = new_database("optuna")
    result = run_module("alembic_migrate", {"config": str(optuna_ini()), "url": url, "revision": "heads",
                                            "lock_timeout": "2s"})
    assert result.rc == 0, result.output[-3000:]
    assert result.result["applied"] == OPTUNA_CHAIN and revision_of(url) == [OPTUNA_HEAD]


@pytest.mark.playbook
def test_an_async_app_runs_as_under_its_own_alembic_command(new_database, tmp_path):
    """postgresql+asyncpg://, settings from the app's environment, an import that prints to stdout."""
    url = new_database("asyncapp")
    async_url = ConnInfo.parse(url).url(scheme="postgresql+asyncpg")
    ini = async_app(tmp_path / "app")
    args = {"config": str(ini), "url": async_url, "lock_timeout": "2s", "statement_timeout": "1min"}

    missing = run_module("alembic_migrate", args)  # APP_DATABASE_URL is not set
    assert missing.rc != 0
    assert "env.py failed before any revision ran: KeyError" in missing.result["msg"]
    assert "APP_DATABASE_URL" in missing.result["msg"] and missing.result["failed_revision"] is None
    assert revision_of(url) == []

    done = run_module("alembic_migrate", args, env={"APP_DATABASE_URL": async_url})
    assert done.rc == 0, done.output[-3000:]
    assert done.result["applied"] == ["a1", "a2"] and revision_of(url) == ["a2"]
    assert sql(url, "SELECT typname FROM pg_type WHERE typname = 'item_status'") == [("item_status",)]
    assert "async_app: loading settings" not in done.stdout.split("{", 1)[0]  # the module's stdout stays JSON
    assert os.environ.get("APP_DATABASE_URL") is None
