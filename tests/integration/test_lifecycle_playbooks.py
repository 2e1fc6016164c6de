"""The lifecycle end to end with the real ansible-playbook on a real PostgreSQL: a failing migration taken
back to exactly where it started, a rollback undone by a restore, and drills on a good backup, a corrupted
one and a chain whose downgrade is broken. Schemas are compared with pg_dump --schema-only, rows with SQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.module_utils.alembic_runner import MigrationRequest, run
from ansible.module_utils.backup_runner import BackupRequest, run_backup
from ansible.module_utils.pg_connection import ConnInfo
from chain_copies import BROKEN_DOWNGRADE_REVISION, BROKEN_REVISION, GOOD_REVISION, HEAD, chain_copy
from support import ROOT, local_vars, reports, revision_of, run_playbook, schema_dump, sql, table_counts

pytestmark = [pytest.mark.db, pytest.mark.playbook]


def test_a_failing_migration_is_taken_back_to_exactly_where_it_started(chain_db, pg_server, workdir, tmp_path):
    url = chain_db(users=50)
    before = (revision_of(url), table_counts(url), schema_dump(url, pg_server.bin_dir))
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION, BROKEN_REVISION)
    result = run_playbook("playbooks/migrate.yml", env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(ini)},
                          extra_vars=local_vars(workdir))
    assert result.rc == 2
    assert (revision_of(url), table_counts(url), schema_dump(url, pg_server.bin_dir)) == before
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "failed-rolled-back" and report["failure"]["failed_revision"] == "f00d00000002"
    rollback = report["rollback"]
    assert rollback["ok"] and rollback["at_start_revision"] and rollback["row_counts_match"]
    assert rollback["applied"] == ["f00d00000001"] and len(report["backup"]["sha256"]) == 64
    text = " ".join(result.output.split())
    assert "MIGRATE FAILED" in text and "(where it started)" in text


def test_a_rollback_then_a_restore_of_the_backup_it_took_brings_everything_back(chain_db, pg_server, workdir):
    url = chain_db(users=50)
    before = (revision_of(url), table_counts(url), schema_dump(url, pg_server.bin_dir))
    database = ConnInfo.parse(url).dbname
    rolled = run_playbook("playbooks/rollback.yml", env={"DATABASE_URL": url},
                          extra_vars=local_vars(workdir, rollback_steps=1))
    assert rolled.rc == 0, rolled.output[-3000:]
    assert revision_of(url) == ["8f1a2b3c4d5e"] and sql(url, "SELECT to_regclass('user_roles')") == [(None,)]
    unconfirmed = run_playbook("playbooks/restore.yml", env={"DATABASE_URL": url},
                               extra_vars=local_vars(workdir, backup_path="latest"))
    assert unconfirmed.rc == 2 and "confirm_restore" in unconfirmed.output
    assert revision_of(url) == ["8f1a2b3c4d5e"]
    restored = run_playbook("playbooks/restore.yml", env={"DATABASE_URL": url},
                            extra_vars=local_vars(workdir, backup_path="latest", confirm_restore=database))
    assert restored.rc == 0, restored.output[-3000:]
    assert (revision_of(url), table_counts(url), schema_dump(url, pg_server.bin_dir)) == before
    first, refused, last = reports(workdir / "reports")
    assert (first["operation"], first["outcome"], first["applied"]) == ("rollback", "rolled-back", [HEAD])
    assert refused["outcome"] == "failed" and last["outcome"] == "restored"
    assert last["restore"]["src"] == first["backup"]["path"]


def scratch_left(url: str) -> list:
    prefix = ConnInfo.parse(url).dbname.replace("_", "\\_") + "\\_drill\\_%"
    return sql(url, "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix,))


@pytest.mark.parametrize("case", ["good backup", "corrupted backup", "broken downgrade"])
def test_drills_pass_on_a_good_backup_and_fail_clearly_otherwise_never_touching_the_source(
        case, new_database, pg_server, workdir, tmp_path):
    url = new_database("drill")
    config = chain_copy(tmp_path / "chain", BROKEN_DOWNGRADE_REVISION) if case == "broken downgrade" else None
    run(MigrationRequest(url=url, config=str(config or ROOT / "alembic.ini")))
    sql(url, "INSERT INTO users (name, email) VALUES ('a', 'a@example.com'), ('b', 'b@example.com')")
    backup = run_backup(BackupRequest(url=url, dest=str(workdir / "backups"), label="weekly"))
    if case == "corrupted backup":  # a byte of the (binary) backup's rows and sequences flipped
        damaged = Path(backup["path"]) / "data.sql.gz"
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0x40
        damaged.write_bytes(bytes(data))
    before = (revision_of(url), table_counts(url), schema_dump(url, pg_server.bin_dir))
    env = {"DATABASE_URL": url, **({"ALEMBIC_CONFIG": str(config)} if config else {})}
    result = run_playbook("playbooks/drill.yml", env=env, extra_vars=local_vars(workdir, drill_fresh_backup="never",
                                                                                 rm_models_check="off"))
    drill = reports(workdir / "reports")[-1]
    if case == "good backup":
        assert result.rc == 0, result.output[-3000:]
        assert drill["drill"]["verdict"] == "PASS" and drill["drill"]["schema_diff"] == []
        assert isinstance(drill["drill"]["restore_s"], float) and len(drill["drill"]["steps"]) == 4
    else:
        assert result.rc == 2 and drill["drill"]["verdict"] == "FAIL"
        if case == "corrupted backup":
            assert "checksum" in drill["failure"]["msg"] and "checksum" in result.output
        else:
            assert drill["failure"]["failed_revision"] == "dead00000001"
    assert (revision_of(url), table_counts(url), schema_dump(url, pg_server.bin_dir)) == before
    assert scratch_left(url) == []
