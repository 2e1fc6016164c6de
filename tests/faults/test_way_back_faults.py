"""The way back planned before apply, and the running app checked against the new schema, end to end through
ansible-playbook: the automatic rollback follows the plan, and production refuses a contract the app still needs."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from chain_copies import BROKEN_REVISION, DROPS_EMAIL, GOOD_REVISION, HEAD, chain_copy
from support import ROOT, local_vars, reports, revision_of, run_playbook, sql, with_database

pytestmark = [pytest.mark.db, pytest.mark.playbook]

# An irreversible data migration: statuses rewritten (in key-range batches), no way down. No other table
# references deployments, so its table alone can go back.
IRREVERSIBLE = GOOD_REVISION.replace(
    'op.add_column("users", sa.Column("nickname", sa.String(50)))',
    'op.execute("UPDATE deployments SET status = upper(status) WHERE id > 0 AND id <= 100000")',
).replace('op.drop_column("users", "nickname")', 'raise NotImplementedError("statuses cannot be lowered back")')


def test_the_rollback_never_downgrades_through_an_irreversible_revision_it_restores_its_tables(
        chain_db, workdir, tmp_path):
    url = chain_db(users=5)
    before = sql(url, "SELECT id, status FROM deployments ORDER BY id")
    assert before and all(status == status.lower() for _, status in before)
    ini = chain_copy(tmp_path / "chain", IRREVERSIBLE, BROKEN_REVISION)
    run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                       extra_vars=local_vars(workdir))
    assert run.rc == 2
    report = reports(workdir / "reports")[-1]
    plan = {e["revision"]: (e["kind"], e["way_back"]["method"]) for e in report["way_back"]}
    assert plan["f00d00000001"] == ("irreversible", "restore-tables")
    assert report["rollback"]["method"] == "restore-tables" and report["rollback"]["ok"] is True
    assert report["outcome"] == "failed-rolled-back"
    assert 0 < report["recovery_s"] < 120  # from the failure to the database back where it started
    assert revision_of(url) == [HEAD]
    assert sql(url, "SELECT id, status FROM deployments ORDER BY id") == before  # the statuses as they were
    replaced = report["rollback"]["replaced_schema"]
    assert sql(url, f"SELECT count(*) FROM {replaced}.deployments WHERE status = upper(status)") == [
        (len(before),)]  # what the migration left is kept aside, not dropped
    assert report["rollback"]["restored"] is False  # no full restore: every other table kept its writes
    assert "Rolled back by restoring deployments from the backup" in " ".join(run.output.split())


def test_a_lossy_downgrade_is_not_the_way_back_unless_allowed(chain_db, workdir, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION, BROKEN_REVISION)
    run = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                       extra_vars=local_vars(workdir, rm_allow_lossy_downgrade=False))
    assert run.rc == 2
    said = " ".join(run.output.split())
    assert "No rollback ran (the way back is a forward fix" in said
    assert revision_of(url) == ["f00d00000001"]  # left where the failed run stopped: nickname is not dropped
    report = reports(workdir / "reports")[-1]
    assert report["rollback"] is None
    assert [e["kind"] for e in report["way_back"]][:1] == ["lossy"]


def _stats_database(stats_server: str, name: str) -> str:
    admin = psycopg2.connect(stats_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return with_database(stats_server, name)


def test_production_refuses_a_revision_that_breaks_the_queries_the_running_app_issues(
        stats_server, workdir, tmp_path):
    """The app's queries as pg_stat_statements recorded them on a PostgreSQL that loads it (started here)."""
    from ansible.module_utils.alembic_runner import MigrationRequest, run

    name = f"wb_{tmp_path.name[-8:].lower().replace('-', '_')}"
    url = _stats_database(stats_server, name)
    try:
        run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini")))
        sql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        sql(url, "INSERT INTO users (name, email) VALUES ('ada', 'ada@example.com')")
        for _ in range(3):  # the running app version reads users.email
            sql(url, "SELECT id, email FROM users WHERE name = %s", ("ada",))
        production = {"vault_rm_db_password": "unused", "rm_database_url": url, "rm_alembic_url": url,
                      "rm_kubernetes": False, "approved_by": "carol", "preflight_require_staging_revision": False,
                      "rm_models_check": "off", "preflight_require_sql_approval": False, **local_vars(workdir)}
        contract = chain_copy(tmp_path / "contract", DROPS_EMAIL)
        refused = run_playbook("playbooks/migrate.yml", inventory="inventories/production",
                               extra_vars={**production, "rm_alembic_config": str(contract)})
        assert refused.rc == 2
        said = " ".join(refused.output.split())
        assert "would fail the moment the migration commits" in said
        assert "f00d00000001 breaks: SELECT id, email FROM users WHERE name = $1" in said
        assert 'column "email" does not exist' in said and "Nothing was changed" in said
        assert revision_of(url) == [HEAD] and not (workdir / "backups").exists()
        broken = reports(workdir / "reports")[-1]["app_queries"]["broken"]
        assert {b["source"] for b in broken} == {"pg_stat_statements"}

        expand = chain_copy(tmp_path / "expand", GOOD_REVISION)  # adds a column: the running app is unaffected
        ran = run_playbook("playbooks/migrate.yml", inventory="inventories/production",
                           extra_vars={**production, "rm_alembic_config": str(expand)})
        assert ran.rc == 0, ran.output[-3000:]
        assert revision_of(url) == ["f00d00000001"]
        queries = reports(workdir / "reports")[-1]["app_queries"]
        assert queries["broken"] == [] and queries["checked"] >= 2
        assert json.loads(json.dumps(queries["sources"]))["stat_statements"] >= 2
    finally:
        admin = psycopg2.connect(stats_server)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        Path(workdir).exists()
