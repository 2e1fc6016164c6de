"""A fleet of 20 databases migrated in waves by migrate.yml (one inventory host per database, the real
ansible-playbook, the local PostgreSQL): the canary first, a database whose data makes a revision fail rolled
back by its own plan, the waves stopped by the failure budget, and a summary that lists every database. Every
database's state is read with SQL, not from the summary."""

from __future__ import annotations

import json

import pytest
from chain_copies import HEAD, chain_copy
from support import fleet_inventory, local_vars, revision_of, run_playbook, sql

pytestmark = [pytest.mark.db, pytest.mark.playbook]

NEW_HEAD = "f1ee00000002"
# Two revisions on top of the chain: an index (applies everywhere), then a unique index on users.name, which
# fails where two users share a name. Both downgrades only drop an index (nothing is lost going back).
INDEX_REVISION = '''"""test: an index on users.name"""
from alembic import op

revision = "f1ee00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_users_name", "users", ["name"])


def downgrade():
    op.drop_index("ix_users_name", table_name="users")
'''
UNIQUE_REVISION = '''"""test: user names become unique (fails where two users share a name)"""
from alembic import op

revision = "f1ee00000002"
down_revision = "f1ee00000001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ux_users_name", "users", ["name"], unique=True)


def downgrade():
    op.drop_index("ux_users_name", table_name="users")
'''

DATABASES = 20
WAVES = [1, 2, "100%"]  # the canary, a wave of 2, then the other 17
FAILING = 2  # the second database of wave 2 (the third of the fleet)
# What the fleet test does not need (it keeps preview, backup, apply, verify, rollback and the reports).
LEAN = {"rm_models_check": "off", "preflight_monitoring": False, "verify_monitoring": False,
        "rm_app_queries_check": "off"}


def indexes(url: str) -> set[str]:
    rows = sql(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'users' AND indexname LIKE '%users_name'")
    return {row[0] for row in rows}


def test_a_fleet_goes_in_waves_and_stops_at_the_failure_budget_with_a_summary_of_every_database(chain_db, workdir):
    ini = chain_copy(workdir / "chain", INDEX_REVISION, UNIQUE_REVISION)
    urls = [chain_db("head", users=20, prefix="fleet") for _ in range(DATABASES)]
    sql(urls[FAILING], "INSERT INTO users (name, email) VALUES ('User 1', 'user1-again@example.com')")
    users_before = sql(urls[FAILING], "SELECT count(*) FROM users")[0][0]
    (workdir / "fleet").mkdir()
    inventory = fleet_inventory(workdir / "fleet", urls)

    run = run_playbook("playbooks/migrate.yml", inventory=str(inventory), extra_vars=local_vars(
        workdir, rm_alembic_config=str(ini), rm_waves=WAVES, rm_max_fail_percentage=0, **LEAN))
    assert run.rc == 2, run.output[-4000:]
    assert "FLEET STOPPED" in run.output

    # The database, by SQL: the canary and the good ones of wave 2 at the new head with both indexes; the failing
    # one back where it started (its own plan downgraded the revision it had applied), rows untouched; the
    # 17 of wave 3 never touched: at the old head, no index, no report, no backup.
    migrated = [0, 1]
    for i in migrated:
        assert revision_of(urls[i]) == [NEW_HEAD], i
        assert indexes(urls[i]) == {"ix_users_name", "ux_users_name"}, i
    assert revision_of(urls[FAILING]) == [HEAD]
    assert indexes(urls[FAILING]) == set()
    assert sql(urls[FAILING], "SELECT count(*) FROM users")[0][0] == users_before
    untouched = list(range(3, DATABASES))
    for i in untouched:
        assert revision_of(urls[i]) == [HEAD] and indexes(urls[i]) == set(), i

    names = [sql(url, "SELECT current_database()")[0][0] for url in urls]
    reports = {}
    for i, name in enumerate(names):
        found = sorted((workdir / "reports" / "fleet-example" / name).glob("*/report.json"))
        reports[i] = json.loads(found[0].read_text()) if found else None
    assert all(reports[i] is None for i in untouched)
    backups = {p.name.split("-")[0] for p in (workdir / "backups").iterdir() if p.name.endswith(".bin")}
    assert backups == {names[i] for i in (*migrated, FAILING)}
    # Verified by the run itself (its verify step compared the live schema with the revision's), per database.
    for i in migrated:
        assert reports[i]["outcome"] == "migrated" and reports[i]["verify"]["revision"] == NEW_HEAD
        assert reports[i]["verify"]["schema_diff"] == []
    assert reports[FAILING]["outcome"] == "failed-rolled-back"
    assert reports[FAILING]["rollback"]["at_start_revision"] and reports[FAILING]["revision_after"] == HEAD
    # The canary ran first: it had finished before wave 2 began.
    assert all(reports[0]["finished_at"] <= reports[i]["started_at"] for i in (1, 2))

    (summary_dir,) = (workdir / "reports" / "fleet-example").glob("fleet-*")
    summary = json.loads((summary_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["max_fail_percentage"] == 0
    truth = {i: "migrated" for i in migrated} | {FAILING: "failed-rolled-back"}
    truth |= {i: "never-touched" for i in untouched}
    assert [(d["database"], d["state"]) for d in summary["databases"]] == [(names[i], truth[i])
                                                                           for i in range(DATABASES)]
    assert [d["wave"] for d in summary["databases"]] == [1, 2, 2] + [3] * 17
    waves = summary["waves"]
    assert [(w["wave"], w["size"], w["state"]) for w in waves] == [(1, 1, "done"), (2, 2, "done"), (3, 17, "never-run")]
    assert waves[1]["budget_exceeded"] and waves[1]["failed"] == 1
    for wave in waves[:2]:
        assert wave["started_at"] and wave["finished_at"] and 0 < wave["duration_s"] < 120
    assert waves[0]["finished_at"] <= waves[1]["started_at"]
    markdown = (summary_dir / "summary.md").read_text()
    assert "**STOPPED** with 1 failed" in markdown
    assert "| 3 | 17 | never ran | — | — | — | 17 never touched |" in markdown
    for i, name in enumerate(names):
        assert f"| `{name}` | tenant-{i + 1:02d} |" in markdown
