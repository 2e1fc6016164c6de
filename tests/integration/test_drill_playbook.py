"""drill.yml rehearses the restore an incident would need now: the newest verified backup at the revision
the database is recorded at (a fresh one when the backups at hand are stale, where allowed), and says so."""

from __future__ import annotations

import pytest
from ansible.module_utils.pg_connection import ConnInfo
from seed_demo_data import seed
from support import local_vars, reports, run_playbook, sql

pytestmark = [pytest.mark.db, pytest.mark.playbook]

HEAD = "9c2b3f1a4e5d"


def scratch_left(url: str) -> list:
    """Scratch databases of this source left behind (other tests may be drilling their own meanwhile)."""
    prefix = ConnInfo.parse(url).dbname.replace("_", "\\_") + "\\_drill\\_%"
    return sql(url, "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,))


@pytest.fixture
def migrated_once(new_database, workdir):
    """`make demo`, then data: migrate.yml on a new database (its backup is of the empty database), then rows."""
    url = new_database("drill")
    first = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(workdir))
    assert first.rc == 0, first.output[-3000:]
    seed(url, 12)
    return url


def test_a_drill_right_after_the_first_migration_rehearses_todays_restore(migrated_once, workdir):
    result = run_playbook("playbooks/drill.yml", env={"DATABASE_URL": migrated_once}, extra_vars=local_vars(workdir))
    assert result.rc == 0, result.output[-3000:]
    drill = reports(workdir / "reports")[-1]["drill"]
    assert drill["verdict"] == "PASS" and drill["restored_revision"] == HEAD
    assert "fresh backup" in drill["backup_reason"] and "stale backup" in drill["backup_reason"]
    assert f"recorded at {HEAD}" in drill["backup_reason"]
    assert [s["result"] for s in drill["smoke"]] == [12]
    assert drill["scratch_dropped"] and scratch_left(migrated_once) == []


def test_a_drill_with_only_a_stale_backup_and_no_fresh_one_allowed_fails_saying_how_to_fix_it(migrated_once,
                                                                                              workdir):
    result = run_playbook("playbooks/drill.yml", env={"DATABASE_URL": migrated_once},
                          extra_vars=local_vars(workdir, drill_fresh_backup="never"))
    assert result.rc == 2
    text = " ".join(result.output.split())
    assert "stale backup" in text and f"the database is recorded at {HEAD}" in text
    assert "playbooks/backup.yml" in text
    report = reports(workdir / "reports")[-1]
    assert report["drill"]["verdict"] == "FAIL" and "stale backup" in report["failure"]["msg"]


def test_a_smoke_query_that_cannot_apply_at_the_restored_revision_is_not_applicable(new_database, workdir):
    url = new_database("drill")
    migrate = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url},
                           extra_vars=local_vars(workdir, target_revision="8f1a2b3c4d5e"))
    assert migrate.rc == 0, migrate.output[-3000:]
    backup = run_playbook("playbooks/backup.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(workdir))
    assert backup.rc == 0, backup.output[-3000:]
    result = run_playbook("playbooks/drill.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(
        workdir, drill_fresh_backup="never", drill_smoke_queries=["SELECT count(*) FROM user_roles",
                                                                  "SELECT count(*) FROM users"]))
    assert result.rc == 0, result.output[-3000:]
    drill = reports(workdir / "reports")[-1]["drill"]
    assert "the newest verified backup at the recorded revision 8f1a2b3c4d5e" in drill["backup_reason"]
    user_roles, users = drill["smoke"]
    assert "table does not exist at revision 8f1a2b3c4d5e" in user_roles["not_applicable"]
    assert users["ok"] and users["result"] == 0
