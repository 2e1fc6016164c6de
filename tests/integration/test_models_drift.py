"""A revision that drifts from the app's models is stopped before the backup (Alembic's `alembic check`
on the scratch reference database), on our chain and on a third-party one; an accepted, reviewed
difference does not stop a run, and is written into the report."""

from __future__ import annotations

import shutil

import pytest
from ansible.module_utils.pg_connection import ConnInfo
from chain_copies import DRIFTING_REVISION, HEAD, chain_copy
from foreign_projects import OPTUNA_HEAD, optuna_ini
from support import local_vars, reports, revision_of, run_playbook, sql

pytestmark = [pytest.mark.db, pytest.mark.playbook]

# optuna's own models and chain differ at its head (upstream): reviewed and accepted for these tests.
OPTUNA_KNOWN = ["table trial_heartbeats is in the models", "column trial_values.trial_id: nullable",
                "index trials_study_id_key on trials", "index ix_trials_study_id on trials"]

OPTUNA_DRIFT = '''"""test: a column the models do not have"""
import sqlalchemy as sa
from alembic import op

revision = "drift0000001"
down_revision = "v3.2.0.a"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("studies", sa.Column("drift_note", sa.String(20)))


def downgrade():
    op.drop_column("studies", "drift_note")
'''


def scratch_databases(url: str) -> list:
    """Scratch databases left behind by the run on this database (other tests may have their own)."""
    name = ConnInfo.parse(url).dbname
    return sql(url, "SELECT datname FROM pg_database WHERE datname LIKE %s", (name.replace("_", "\\_") + "\\_%",))


def test_a_revision_that_drifts_from_our_models_is_stopped_before_the_backup(chain_db, workdir, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", DRIFTING_REVISION)
    result = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                          extra_vars=local_vars(workdir, rm_models_check="fail"))
    assert result.rc == 2
    assert "differs from the app's models" in result.output and "ix_releases_created_at" in result.output
    assert revision_of(url) == [HEAD] and not (workdir / "backups").exists()
    assert sql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_releases_created_at'") == [(1,)]
    report = reports(workdir / "reports")[-1]
    assert report["models"]["reference"]["diffs"] == [
        "index ix_releases_created_at on releases is in the models, not in the database"]
    assert scratch_databases(url) == []


def optuna_copy(tmp_path, *extra: tuple[str, str]):
    """optuna's alembic.ini, env.py and revisions as shipped, copied so a test revision can sit on top."""
    shutil.copytree(optuna_ini().parent / "alembic", tmp_path / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(optuna_ini(), tmp_path / "alembic.ini")
    for name, text in extra:
        (tmp_path / "alembic" / "versions" / name).write_text(text)
    return tmp_path / "alembic.ini"


@pytest.mark.parametrize("drifting", [False, True])
def test_a_third_party_chain_with_accepted_differences_runs_and_a_new_drift_stops(drifting, new_database, workdir,
                                                                                   tmp_path):
    url = new_database("optuna")
    ini = optuna_copy(tmp_path / "optuna", *([("drift0000001_drift.py", OPTUNA_DRIFT)] if drifting else []))
    extra = local_vars(workdir, rm_models_check="fail", rm_models_ignore=OPTUNA_KNOWN, target_revision="heads")
    result = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                          extra_vars=extra)
    report = reports(workdir / "reports")[-1]
    reference = report["models"]["reference"]
    assert reference["checked"] and len(reference["accepted"]) == 4
    if drifting:
        assert result.rc == 2 and revision_of(url) == [] and not (workdir / "backups").exists()
        assert reference["diffs"] == ["column studies.drift_note is in the database, not in the models"]
    else:
        assert result.rc == 0, result.output[-3000:]
        assert revision_of(url) == [OPTUNA_HEAD] and report["outcome"] == "migrated"
        assert reference["diffs"] == [] and report["models"]["live"]["diffs"] == []
        assert "accepted after review" in (workdir / "reports").joinpath(
            *report["report_dir"].split("/reports/")[1].split("/"), "report.md").read_text()
    assert scratch_databases(url) == []
