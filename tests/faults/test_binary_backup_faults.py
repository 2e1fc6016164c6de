"""Injected faults for binary backups: a damaged or cut rows file, a rows.json that names other files or SQL, psql
dying while it writes rows. Each failure is loud and leaves nothing that looks finished or half-loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import binary_backup, client_bin, database_exists, run_module, sql

SEED_SQL = '''
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Odd ""Name""" (id bigint PRIMARY KEY, note text, at timestamptz);
INSERT INTO "My Schema"."Odd ""Name""" SELECT i, 'note ' || i, now() FROM generate_series(1, 3000) i;
CREATE TABLE audit (n int);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('b1b2b3b4b5b6');
'''


@pytest.fixture
def mixed_db(new_database):
    url = new_database("rm_binf")
    sql(url, SEED_SQL)
    return url



@pytest.mark.db
def test_a_damaged_rows_file_is_refused_by_its_checksum_naming_the_file(mixed_db, target_db, workdir, pg_server):
    taken = binary_backup(mixed_db, workdir)
    rows_file = sorted((Path(taken["path"]) / "rows").iterdir())[0]
    data = bytearray(rows_file.read_bytes())
    data[len(data) // 2] ^= 0x40
    rows_file.write_bytes(bytes(data))
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"]})

    assert run.rc != 0 and "checksum mismatch" in run.result["msg"] and rows_file.name in run.result["msg"]
    assert not database_exists(pg_server, target)


@pytest.mark.db
@pytest.mark.parametrize("into", ["new", "given"])
def test_a_rows_file_cut_short_fails_the_load_and_keeps_nothing(into, mixed_db, target_db, new_database, workdir,
                                                               pg_server):
    """Unchecked (verify_checksum: false), a truncated rows file stops the load: the database the restore made is
    dropped; a given database is rolled back to empty."""
    taken = binary_backup(mixed_db, workdir)
    root = Path(taken["path"])
    odd = next(t for t in json.loads((root / "rows.json").read_text())["tables"] if t["table"].startswith('"My'))
    rows_file = root / odd["files"][0]
    rows_file.write_bytes(rows_file.read_bytes()[: rows_file.stat().st_size // 2])
    target = target_db() if into == "new" else new_database("rm_given")

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "verify_checksum": False, "jobs": 2})

    assert run.rc != 0
    if into == "new":
        assert odd["files"][0] in run.result["msg"] and "was dropped" in run.result["msg"], run.result["msg"]
        assert not database_exists(pg_server, target)
    else:
        assert "rolled back" in run.result["msg"]
        assert sql(target, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
                           "'information_schema')") == [(0,)]


@pytest.mark.db
def test_rows_json_naming_anything_but_its_own_files_and_names_is_refused(mixed_db, target_db, workdir, pg_server):
    taken = binary_backup(mixed_db, workdir)
    index_path = Path(taken["path"]) / "rows.json"
    index = json.loads(index_path.read_text())
    for edit in ({"files": ["rows/../../../etc/passwd"]}, {"table": "public.t; DROP DATABASE postgres; --"},
                 {"columns": ["id) FROM stdin; DROP TABLE audit; --"]}):
        changed = {**index, "tables": [{**index["tables"][0], **edit}, *index["tables"][1:]]}
        index_path.write_text(json.dumps(changed))
        target = target_db()

        run = run_module("pg_restore", {"url": target, "src": taken["path"], "verify_checksum": False})

        assert run.rc != 0 and "are not this backup's" in run.result["msg"], run.result["msg"]
        assert not database_exists(pg_server, target)


@pytest.mark.db
def test_psql_dying_while_it_writes_rows_leaves_no_backup(mixed_db, workdir, pg_server):
    """A rows file's psql is killed half way (as an OOM kill would): nothing is kept, not even a .partial."""
    real = client_bin(pg_server)
    bin_dir = workdir / "dying-bin"
    bin_dir.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        os.symlink(Path(real) / tool, bin_dir / tool)
    (bin_dir / "psql").write_text(
        "#!/bin/sh\n"
        f'REAL="{real}/psql"\n'
        'case "$*" in *"FORMAT binary"*) "$REAL" "$@" | head -c 300; kill -9 $$ ;; esac\n'
        'exec "$REAL" "$@"\n')
    (bin_dir / "psql").chmod(0o755)
    dest = workdir / "b"

    run = run_module("pg_backup", {"url": mixed_db, "dest": str(dest), "format": "binary", "binary_min_bytes": 0,
                                   "pg_bin_dir": str(bin_dir)})

    assert run.rc != 0 and "psql failed" in run.result["msg"], run.result["msg"]
    assert sorted(p.name for p in dest.iterdir()) == []


def slow_pg_dump(workdir: Path, pg_server, seconds: float) -> str:
    """A bin dir whose pg_dump starts ``seconds`` late (the backup's own session already holds its locks)."""
    real = client_bin(pg_server)
    bin_dir = workdir / "slow-bin"
    bin_dir.mkdir()
    for tool in ("psql", "pg_restore"):
        os.symlink(Path(real) / tool, bin_dir / tool)
    (bin_dir / "pg_dump").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--snapshot*) sleep {seconds} ;; esac\n'
        f'exec "{real}/pg_dump" "$@"\n')
    (bin_dir / "pg_dump").chmod(0o755)
    return str(bin_dir)


@pytest.mark.db
def test_a_ddl_queued_behind_the_backup_fails_it_within_the_lock_wait_and_then_runs(mixed_db, workdir, pg_server,
                                                                                   monkeypatch):
    """ALTER TABLE queues behind the backup's own session; pg_dump's lock would queue behind the ALTER for ever (and
    every app query behind both). The backup gives up after its lock wait, keeps nothing, and the ALTER runs."""
    import threading

    from ansible.module_utils import backup_runner
    from ansible.module_utils.backup_runner import BackupRequest, run_backup
    from ansible.module_utils.operator_error import OperatorError

    monkeypatch.setattr(backup_runner, "LOCK_WAIT_MS", 1000)
    dest = workdir / "b"
    request = BackupRequest(url=mixed_db, dest=str(dest), binary_min_bytes=0,
                            pg_bin_dir=slow_pg_dump(workdir, pg_server, 1.5))
    failure: list[BaseException] = []
    backup = threading.Thread(target=lambda: _capture(failure, run_backup, request))
    backup.start()
    import time

    time.sleep(0.7)  # the backup's session holds the big table's lock; pg_dump has not started
    sql(mixed_db, 'ALTER TABLE "My Schema"."Odd ""Name""" ADD COLUMN added int')  # waits for the backup to let go
    backup.join(60)

    assert not backup.is_alive() and failure and isinstance(failure[0], OperatorError), failure
    assert "LOCK TABLE" in failure[0].message and "queued behind the backup" in failure[0].hint, failure[0]
    assert sorted(p.name for p in dest.iterdir()) == []
    assert sql(mixed_db, "SELECT count(*) FROM pg_attribute WHERE attname = 'added' AND attrelid = %s::regclass",
               ('"My Schema"."Odd ""Name"""',)) == [(1,)]


def _capture(failures: list, call, *args) -> None:
    try:
        call(*args)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        failures.append(exc)


@pytest.mark.db
def test_the_roles_idle_in_transaction_timeout_does_not_end_the_backups_snapshot(mixed_db, workdir, pg_server):
    """A production database often sets idle_in_transaction_session_timeout; the backup's session holding the
    snapshot is idle while the tools dump (here: pg_dump starts 1.5 s late against a 1 s timeout)."""
    from ansible.module_utils.pg_connection import parse_url

    database = parse_url(mixed_db).dbname
    pg_server.execute(f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = \'1s\'')

    run = run_module("pg_backup", {"url": mixed_db, "dest": str(workdir / "b"), "format": "binary",
                                   "binary_min_bytes": 0, "pg_bin_dir": slow_pg_dump(workdir, pg_server, 1.5)})

    assert run.rc == 0, run.output
    index = json.loads((Path(run.result["path"]) / "rows.json").read_text())
    assert [t["table"] for t in index["tables"]][:1] == ['"My Schema"."Odd ""Name"""']
