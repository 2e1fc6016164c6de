"""Nothing lost: retention never removes the backup a run restores from nor a file pg_backup did not write,
a damaged backup is never reused, a scratch database name can never land on a real one.

Each test injects the fault and checks the outcome with SQL and the filesystem, not with our modules.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from ansible.module_utils.backup_manifest import manifest_path_for
from ansible.module_utils.backup_runner import BackupRequest, run_backup
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo
from ansible.module_utils.scratch_database import ensure_database
from support import local_vars, reports, run_playbook, sql

pytestmark = pytest.mark.db


def users(url: str) -> int:
    return sql(url, "SELECT count(*) FROM users")[0][0]


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file of a backup directory, by relative path (hashlib, not the module's code)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def load_by_hand(backup: Path, url: str, bin_dir: str) -> None:
    """The last resort without Ansible: a binary backup by hand as the README says (psql and gzip), a plain one
    the runbook's way (`gunzip -c backup | psql`)."""
    conn = ConnInfo.parse(url)
    if backup.is_dir():
        command = ("{ gunzip -c schema.sql.gz; cat rows.psql; gunzip -c data.sql.gz; } | "
                   f"'{bin_dir}/psql' -X -q -v ON_ERROR_STOP=1 --single-transaction")
        subprocess.run(["sh", "-c", command], cwd=backup, env=conn.libpq_env(), check=True, capture_output=True)
        return
    with gzip.open(backup, "rb") as source:
        subprocess.run([f"{bin_dir}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=source.read(),
                       env=conn.libpq_env(), check=True, capture_output=True)


@pytest.mark.playbook
def test_restore_yml_keeps_the_backup_it_restores_and_a_copy_of_what_was_there(chain_db, workdir, new_database,
                                                                                pg_server):
    """Five backups, then restore.yml with the oldest and backup_keep=2: nothing the run needs is pruned."""
    url = chain_db(users=5)
    dest = workdir / "backups"
    taken = []
    for i in range(5):
        sql(url, "INSERT INTO users (name, email) VALUES (%s, %s)", (f"extra {i}", f"extra{i}@example.com"))
        taken.append(run_backup(BackupRequest(url=url, dest=str(dest), label=f"b{i}")))
    oldest = Path(taken[0]["path"])
    database = ConnInfo.parse(url).dbname

    run = run_playbook("playbooks/restore.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(
        workdir, backup_path=str(oldest), confirm_restore=database, backup_keep=2))

    assert run.rc == 0, run.output[-3000:]
    assert users(url) == 6  # the oldest backup's rows
    assert oldest.exists() and manifest_path_for(oldest).exists()
    assert all(Path(t["path"]).exists() for t in taken)  # no retention while restoring
    (pre_restore,) = [p for p in dest.iterdir() if "-pre_restore." in p.name and p.name.endswith(".bin")]
    by_hand = new_database("byhand")
    load_by_hand(pre_restore, by_hand, pg_server.bin_dir)
    assert users(by_hand) == 10  # what was there before the restore, loaded the runbook's way
    report = reports(workdir / "reports")[-1]
    assert report["outcome"] == "restored" and report["restore"]["src"] == str(oldest)


def test_pg_backup_retention_never_removes_files_it_did_not_write(chain_db, workdir):
    url = chain_db(users=3)
    database = ConnInfo.parse(url).dbname
    dest = workdir / "b"
    dest.mkdir()
    notes = dest / f"{database}-20200101T000000Z.sql"
    notes.write_text("-- my notes, not a backup\n")
    folder = dest / f"{database}-20200102T000000Z.dir"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")

    for i in range(3):
        run_backup(BackupRequest(url=url, dest=str(dest), label=f"k{i}", keep=2))

    assert notes.read_text() == "-- my notes, not a backup\n"
    assert (folder / "notes.txt").read_text() == "keep me"
    ours = sorted(p.name for p in dest.iterdir() if p.name.endswith(".bin"))
    assert len(ours) == 2 and ours[-1].endswith("-k2.bin") and ours[0].endswith("-k1.bin")


@pytest.mark.playbook
def test_backup_yml_takes_a_verified_backup_and_max_age_never_reuses_a_damaged_one(chain_db, workdir):
    url = chain_db(users=7)
    env = {"DATABASE_URL": url}
    first = run_playbook("playbooks/backup.yml", env=env, extra_vars=local_vars(workdir))
    assert first.rc == 0, first.output[-3000:]
    path = Path(reports(workdir / "reports")[-1]["backup"]["path"])
    manifest = json.loads(manifest_path_for(path).read_text())
    assert file_digests(path) == manifest["files"]
    assert b"-- PostgreSQL database dump complete" in gzip.decompress((path / "data.sql.gz").read_bytes())[-4096:]

    with open(path / "data.sql.gz", "r+b") as handle:  # the newest backup, truncated after it was verified
        handle.truncate(100)
    second = run_playbook("playbooks/backup.yml", env=env, extra_vars=local_vars(workdir, backup_max_age_s=3600))

    assert second.rc == 0, second.output[-3000:]
    backup = reports(workdir / "reports")[-1]["backup"]
    assert backup["path"] != str(path) and backup["reused"] is False
    assert "was not reused" in backup["reuse_refused"] and "checksum mismatch" in backup["reuse_refused"]
    fresh = Path(backup["path"])
    assert file_digests(fresh) == json.loads(manifest_path_for(fresh).read_text())["files"]
    assert "was not reused" in second.output


def test_a_database_name_postgresql_would_cut_is_never_created_or_dropped(pg_server):
    """A 70-byte name would be cut to 63 bytes by PostgreSQL: possibly another, existing database."""
    long_name = "x" * 70
    pg_server.execute(f'CREATE DATABASE "{long_name[:63]}"')
    try:
        with pytest.raises(OperatorError, match="longer than PostgreSQL's 63 bytes"):
            ensure_database(ConnInfo.parse(pg_server.url(long_name)), False)
        assert pg_server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (long_name[:63],)) == [(1,)]
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{long_name[:63]}"')


@pytest.mark.playbook
@pytest.mark.parametrize("playbook, variable", [("migrate", "preview_reference_database"),
                                                ("drill", "drill_scratch")])
def test_a_scratch_name_pointing_at_the_live_database_never_drops_it(playbook, variable, chain_db, workdir):
    url = chain_db(revision="8f1a2b3c4d5e" if playbook == "migrate" else "head", users=6)
    database = ConnInfo.parse(url).dbname
    run_backup(BackupRequest(url=url, dest=str(workdir / "backups")))
    result = run_playbook(f"playbooks/{playbook}.yml", env={"DATABASE_URL": url},
                          extra_vars=local_vars(workdir, **{variable: database}))
    assert result.rc == 2
    assert "already exists, and a scratch database must be new" in result.output
    assert users(url) == 6  # the live database is there, with its rows
    if playbook == "migrate":  # refused in the preview, before the backup: nothing applied
        assert sql(url, "SELECT version_num FROM alembic_version") == [("8f1a2b3c4d5e",)]


@pytest.mark.playbook
def test_restoring_latest_twice_never_restores_the_copy_the_first_restore_took(chain_db, workdir):
    url = chain_db(users=4)
    database = ConnInfo.parse(url).dbname
    good = run_backup(BackupRequest(url=url, dest=str(workdir / "backups"), label="scheduled"))
    sql(url, "UPDATE users SET name = 'BAD'")  # the incident
    for _ in range(2):  # an operator reruns the same command (or retries after an interruption)
        result = run_playbook("playbooks/restore.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(
            workdir, backup_path="latest", confirm_restore=database))
        assert result.rc == 0, result.output[-3000:]
        assert reports(workdir / "reports")[-1]["restore"]["src"] == good["path"]
        assert sql(url, "SELECT count(*) FROM users WHERE name = 'BAD'") == [(0,)]
    pre_restore = [p for p in (workdir / "backups").iterdir() if "-pre_restore." in p.name and p.suffix == ".bin"]
    assert len(pre_restore) == 2 and not list((workdir / "backups").glob("*.pin"))
    # a bare file name is a backup in rm_backup_dir
    bare = run_playbook("playbooks/restore.yml", env={"DATABASE_URL": url}, extra_vars=local_vars(
        workdir, backup_path=Path(good["path"]).name, confirm_restore=database), check=True)
    assert bare.rc == 0, bare.output[-3000:]


def test_max_age_never_reuses_a_backup_of_a_database_a_restore_has_replaced(chain_db, workdir):
    from ansible.module_utils.restore_runner import RestoreRequest, run_restore

    url = chain_db(users=3)
    first = run_backup(BackupRequest(url=url, dest=str(workdir)))
    run_restore(RestoreRequest(url=url, src=first["path"], clean=True, confirm=True))  # a new database, same name
    again = run_backup(BackupRequest(url=url, dest=str(workdir), max_age=3600))
    assert again["reused"] is False and again["path"] != first["path"]


def test_retention_never_removes_a_backup_a_restore_has_pinned(chain_db, workdir):
    from ansible.module_utils.backup_catalog import pin_path

    url = chain_db(users=2)
    pinned = run_backup(BackupRequest(url=url, dest=str(workdir), label="p0"))
    pin_path(pinned["path"]).write_text("restoring\n")
    for i in range(3):
        run_backup(BackupRequest(url=url, dest=str(workdir), label=f"n{i}", keep=1))
    assert Path(pinned["path"]).exists() and manifest_path_for(pinned["path"]).exists()


def test_a_changed_database_is_restored_again_not_called_already_restored(chain_db, target_db, workdir):
    from ansible.module_utils.restore_runner import RestoreRequest, run_restore

    source = chain_db(users=3)
    backup = run_backup(BackupRequest(url=source, dest=str(workdir), format="custom"))
    target = target_db()
    name = ConnInfo.parse(source).dbname
    run_restore(RestoreRequest(url=target, src=backup["path"], source_database=name))
    sql(target, "DROP TABLE user_roles")
    again = run_restore(RestoreRequest(url=target, src=backup["path"], source_database=name, confirm=True))
    assert again["changed"] is True
    assert sql(target, "SELECT to_regclass('user_roles') IS NOT NULL") == [(True,)]


def test_a_backup_name_too_long_for_the_filesystem_is_refused_before_dumping(chain_db, workdir):
    url = chain_db(users=1)
    label = "x" * 64
    long_db = "€" * 40  # 120 bytes of name
    with pytest.raises(OperatorError, match="255 bytes"):
        from ansible.module_utils.backup_runner import check_name_length
        from ansible.module_utils.pg_client_tools import parse_compression

        check_name_length(long_db, "plain", parse_compression("gzip:1"), label)
    assert run_backup(BackupRequest(url=url, dest=str(workdir), label="short"))["path"]
    assert not list(workdir.glob("*.partial"))


def test_backups_of_two_servers_in_one_directory_never_stand_in_for_each_other(pg_server, workdir):
    """The same database name on the embedded server and the machine's PostgreSQL, one backup directory."""
    import psycopg2

    other_admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg2.connect(other_admin, connect_timeout=2).close()
    except psycopg2.Error:
        pytest.skip("no second PostgreSQL server on 127.0.0.1:5432")
    if pg_server.admin_url.startswith(other_admin.rsplit("/", 1)[0]):
        pytest.skip("the test server is the machine's own")
    from ansible.module_utils.restore_runner import RestoreRequest, run_restore
    from support import with_database

    name = f"rm_two_{uuid.uuid4().hex[:8]}"
    here, there = pg_server.url(name), with_database(other_admin, name)
    for admin, url, who in ((pg_server.admin_url, here, "here"), (other_admin, there, "there")):
        sql(admin, f'CREATE DATABASE "{name}"')
        sql(url, "CREATE TABLE t (who text); INSERT INTO t VALUES (%s)", (who,))
    try:
        mine = run_backup(BackupRequest(url=here, dest=str(workdir), label="mine"))
        theirs = run_backup(BackupRequest(url=there, dest=str(workdir), label="theirs", keep=1))
        assert Path(mine["path"]).exists()  # their retention did not count our backup
        result = run_restore(RestoreRequest(url=here, src=str(workdir), clean=True, confirm=True))
        assert result["src"] == mine["path"] and sql(here, "SELECT who FROM t") == [("here",)]
        with pytest.raises(OperatorError, match="taken on another server"):
            run_restore(RestoreRequest(url=here, src=theirs["path"], clean=True, confirm=True))
        assert sql(here, "SELECT who FROM t") == [("here",)]
    finally:
        sql(pg_server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        sql(other_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
