"""Injected faults for pg_backup / pg_restore: damaged backups, wrong passwords, old clients, pg_dump dying.

Each test proves the failure is loud and leaves nothing that looks finished: no restored (or even
created) target from a damaged backup, no backup or manifest from a dump that died, no password in
any output.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
from ansible.module_utils.backup_manifest import manifest_path_for
from ansible.module_utils.pg_connection import parse_url
from support import database_exists, run_module, sql, url_with_credentials, with_database

OLD_CLIENT = Path("/usr/lib/postgresql/15/bin")
SEED_SQL = """
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 50) g;
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('1a2b3c4d5e6f');
"""


@pytest.fixture
def seeded_db(new_database):
    url = new_database("rm_fault")
    sql(url, SEED_SQL)
    return url


def take_backup(url: str, dest: Path, **args) -> dict:
    run = run_module("pg_backup", {"url": url, "dest": str(dest), **args})
    assert run.rc == 0, run.output
    return run.result


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x40
    path.write_bytes(bytes(data))


def wrapped_bin(tmp: Path, real_bin: str, pg_dump_body: str) -> str:
    """A bin dir whose pg_dump runs ``pg_dump_body`` (with $REAL set) and whose other tools are the real ones."""
    bin_dir = tmp / "wrapped-bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'REAL="{real_bin}/pg_dump"\n'
        'if [ "$1" = "--version" ]; then exec "$REAL" --version; fi\n'
        + pg_dump_body
    )
    script.chmod(0o755)
    for tool in ("pg_restore", "psql"):
        os.symlink(Path(real_bin) / tool, bin_dir / tool)
    return str(bin_dir)


# --- damaged backups -----------------------------------------------------------------------------------


@pytest.mark.db
@pytest.mark.parametrize("fmt", ["custom", "plain", "tar"])
def test_backup_with_a_flipped_byte_is_refused_and_target_not_created(fmt, seeded_db, target_db, workdir,
                                                                      pg_server):
    backup = take_backup(seeded_db, workdir, format=fmt)
    flip_byte(Path(backup["path"]))
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": backup["path"]})

    assert run.rc != 0
    assert "checksum mismatch" in run.result["msg"]
    assert "modified or truncated after it was written" in run.result["msg"]
    assert "take another backup" in run.result["hint"].lower()
    assert not database_exists(pg_server, target)


@pytest.mark.db
def test_directory_backup_with_a_damaged_file_is_refused_naming_the_file(seeded_db, target_db, workdir, pg_server):
    backup = take_backup(seeded_db, workdir, format="directory")
    data_file = next(p for p in Path(backup["path"]).iterdir() if p.name != "toc.dat")
    flip_byte(data_file, offset=5)
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": backup["path"]})

    assert run.rc != 0
    assert "checksum mismatch" in run.result["msg"] and data_file.name in run.result["msg"]
    assert not database_exists(pg_server, target)


@pytest.mark.db
def test_truncated_backup_is_refused_also_in_check_mode(seeded_db, target_db, workdir, pg_server):
    backup = take_backup(seeded_db, workdir, format="plain")
    path = Path(backup["path"])
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    target = target_db()

    for check in (True, False):
        run = run_module("pg_restore", {"url": target, "src": str(path)}, check=check)
        assert run.rc != 0
        assert "checksum mismatch" in run.result["msg"] and "bytes on disk" in run.result["msg"]
    assert not database_exists(pg_server, target)


@pytest.mark.db
def test_damaged_newest_backup_in_a_directory_is_not_skipped_silently(seeded_db, target_db, workdir, pg_server):
    """`src: <dir>` picks the newest verified backup; if its bytes changed, the restore fails, loudly."""
    take_backup(seeded_db, workdir, label="older", format="plain")
    newest = take_backup(seeded_db, workdir, label="newer", format="plain")
    flip_byte(Path(newest["path"]))
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": str(workdir),
                                    "source_database": parse_url(seeded_db).dbname})

    assert run.rc != 0 and "checksum mismatch" in run.result["msg"] and "newer" in run.result["msg"]
    assert not database_exists(pg_server, target)


# --- credentials ---------------------------------------------------------------------------------------


@pytest.mark.db
def test_wrong_password_fails_without_showing_any_password(seeded_db, password_role, target_db, workdir,
                                                           pg_server):
    user, password = password_role
    wrong = f"Wr0ng-{uuid.uuid4().hex[:12]}"
    bad_url = url_with_credentials(seeded_db, user, wrong)
    good = take_backup(seeded_db, workdir)

    backup = run_module("pg_backup", {"url": bad_url, "dest": str(workdir / "b")}, real=True)
    target = target_db()
    restore = run_module("pg_restore", {"url": url_with_credentials(target, user, wrong), "src": good["path"]},
                         real=True)

    for run in (backup, restore):
        assert run.rc != 0
        assert "password authentication failed" in run.result["msg"]
        assert f"user '{user}'" in run.result["hint"]
        assert wrong not in run.output and password not in run.output
    assert not (workdir / "b").exists()
    assert not database_exists(pg_server, target)


@pytest.mark.db
def test_password_reaches_pg_dump_only_through_its_environment(seeded_db, password_role, target_db, workdir,
                                                               pg_server):
    user, password = password_role
    spy_log = workdir / "pg_dump-argv.txt"
    spy = wrapped_bin(workdir, pg_server.bin_dir, (
        f'echo "ARGS: $*" >> "{spy_log}"\n'
        f'[ -n "$PGPASSWORD" ] && echo "PGPASSWORD set" >> "{spy_log}"\n'
        'exec "$REAL" "$@"\n'
    ))
    url = url_with_credentials(seeded_db, user, password)

    backup = run_module("pg_backup", {"url": url, "dest": str(workdir / "b"), "pg_bin_dir": spy}, real=True)
    assert backup.rc == 0, backup.output
    restore = run_module("pg_restore", {"url": url_with_credentials(target_db(), user, password),
                                        "src": backup.result["path"]})
    assert restore.rc == 0, restore.output

    log = spy_log.read_text()
    assert "ARGS:" in log and "PGPASSWORD set" in log
    assert password not in log  # never on a command line
    for run in (backup, restore):
        assert password not in run.output
    assert password not in manifest_path_for(backup.result["path"]).read_text()


# --- client tools --------------------------------------------------------------------------------------


@pytest.mark.db
def test_client_older_than_server_is_refused_before_dumping(seeded_db, target_db, workdir, pg_server):
    if not (OLD_CLIENT / "pg_dump").exists():
        pytest.skip(f"no old client tools in {OLD_CLIENT}")
    old_version = OLD_CLIENT.parent.name
    if pg_server.major <= int(old_version):
        pytest.skip(f"server {pg_server.version} is not newer than client {old_version}")
    dest = workdir / "b"

    run = run_module("pg_backup", {"url": seeded_db, "dest": str(dest), "pg_bin_dir": str(OLD_CLIENT)})

    assert run.rc != 0
    msg = run.result["msg"]
    assert f"pg_dump {old_version}." in msg and f"older than the server {pg_server.version}" in msg
    assert "pg_bin_dir" in run.result["hint"] and f"postgresql-client-{pg_server.major}" in run.result["hint"]
    assert not dest.exists()

    good = take_backup(seeded_db, workdir)
    target = target_db()
    restore = run_module("pg_restore", {"url": target, "src": good["path"], "pg_bin_dir": str(OLD_CLIENT)})
    assert restore.rc != 0 and f"older than the server {pg_server.version}" in restore.result["msg"]
    assert not database_exists(pg_server, target)


# --- pg_dump dying -------------------------------------------------------------------------------------


@pytest.mark.db
@pytest.mark.parametrize("fmt", ["custom", "plain", "directory", "binary"])
def test_pg_dump_dying_midway_leaves_no_backup_and_no_manifest(fmt, seeded_db, workdir, pg_server):
    # The wrapper lets pg_dump write part of its output, then dies by SIGKILL like an OOM kill would.
    body = (
        'case "$*" in *-Fd*) "$REAL" "$@"; kill -9 $$ ;; esac\n'
        '"$REAL" "$@" | head -c 700\n'
        'kill -9 $$\n'
    )
    dying = wrapped_bin(workdir, pg_server.bin_dir, body)
    dest = workdir / "b"

    run = run_module("pg_backup", {"url": seeded_db, "dest": str(dest), "format": fmt, "pg_bin_dir": dying})

    assert run.rc != 0
    assert "pg_dump failed" in run.result["msg"]
    assert sorted(p.name for p in dest.iterdir()) == []  # no backup, no manifest, no .partial


@pytest.mark.db
@pytest.mark.parametrize(("fmt", "says"), [("plain", "pg_dump failed"), ("binary", "server closed the connection")])
def test_backend_terminated_during_dump_leaves_no_backup(fmt, says, seeded_db, workdir, pg_server):
    """A real pg_dump (binary: the session choosing the tables) loses its server connection half way (here: while
    waiting for a table lock)."""
    database = parse_url(seeded_db).dbname
    dest = workdir / "b"
    locker = psycopg2.connect(seeded_db)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(run_module, "pg_backup", {"url": seeded_db, "dest": str(dest), "format": fmt})
            deadline = time.monotonic() + 60
            terminated = False
            while time.monotonic() < deadline and not future.done():
                waiting = pg_server.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (database,))
                if waiting:
                    pg_server.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
                    terminated = True
                    break
                time.sleep(0.1)
            locker.rollback()
            run = future.result(timeout=120)
    finally:
        locker.close()

    assert terminated, run.output
    assert run.rc != 0
    assert says in run.result["msg"]
    assert sorted(p.name for p in dest.iterdir()) == []


@pytest.mark.db
def test_an_unforeseen_os_error_fails_clearly_without_a_traceback_or_the_password(seeded_db, tmp_path, password_role):
    name, password = password_role
    url = url_with_credentials(seeded_db, name, password)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the backup directory's parent should be")

    run = run_module("pg_backup", {"url": url, "dest": str(blocker / "backups")}, real=True)

    assert run.rc != 0
    assert run.result["msg"].startswith("Backup failed: NotADirectoryError")
    assert "Traceback" not in run.output and password not in run.output


# --- a load that fails half way ------------------------------------------------------------------------


def edited_plain_backup(url: str, dest: Path, edit) -> str:
    """An uncompressed plain backup, edited after it was written (restored with verify_checksum: false)."""
    path = Path(take_backup(url, dest, format="plain", compression="none")["path"])
    path.write_bytes(edit(path.read_bytes()))
    return str(path)


def users_rows(text: bytes) -> tuple[int, int]:
    start = text.index(b"\n", text.index(b"COPY public.users")) + 1
    return start, text.index(b"\n\\.\n", start) + 1


def duplicate_a_user(text: bytes) -> bytes:
    """Every row loads; the primary key's build fails afterwards (a duplicate id)."""
    start, _ = users_rows(text)
    first = text[start:text.index(b"\n", start) + 1]
    return text[:start] + first + text[start:]


def break_the_last_user(text: bytes) -> bytes:
    """The rows of users fail in their last chunk, after the first chunks were loaded and committed."""
    _, end = users_rows(text)
    last = text.rindex(b"\n", 0, end - 1) + 1
    return text[:last] + b"not a number\tx@example.com\n" + text[end:]


@pytest.mark.db
@pytest.mark.parametrize("edit", [duplicate_a_user, break_the_last_user])
def test_a_failed_parallel_load_drops_the_database_it_made_and_never_marks_it_restored(
        edit, seeded_db, target_db, workdir, pg_server, monkeypatch):
    from ansible.module_utils import parallel_load

    monkeypatch.setattr(parallel_load, "CHUNK_BYTES", 256)  # users' rows in several chunks, on both sessions
    broken = edited_plain_backup(seeded_db, workdir, edit)
    good = take_backup(seeded_db, workdir / "good")
    fresh, restored = target_db(), target_db()
    assert run_module("pg_restore", {"url": restored, "src": good["path"]}).rc == 0

    new = run_module("pg_restore", {"url": fresh, "src": broken, "verify_checksum": False, "jobs": 2})
    over = run_module("pg_restore", {"url": restored, "src": broken, "verify_checksum": False, "jobs": 2,
                                     "clean": True, "confirm": True, "source_database": parse_url(seeded_db).dbname})

    for run in (new, over):
        assert run.rc != 0
        assert "users" in run.result["msg"] and "was dropped" in run.result["msg"], run.result["msg"]
        assert run.result["dropped"] is True
    assert "dropped by clean: true" in over.result["msg"]
    assert not database_exists(pg_server, fresh) and not database_exists(pg_server, restored)


@pytest.mark.db
def test_a_failed_load_into_a_database_it_did_not_make_is_rolled_back_and_marked_incomplete(
        seeded_db, new_database, workdir, pg_server):
    broken = edited_plain_backup(seeded_db, workdir, duplicate_a_user)
    given = new_database("rm_given")

    run = run_module("pg_restore", {"url": given, "src": broken, "verify_checksum": False, "jobs": 2})

    assert run.rc != 0 and "rolled back" in run.result["msg"]
    assert database_exists(pg_server, given)  # not ours to drop: one transaction, rolled back
    assert sql(given, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    comment = sql(given, "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                         "WHERE datname = current_database()")[0][0]
    assert comment.startswith("release-migrations restoring") and "incomplete" in comment


@pytest.mark.db
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_a_restore_terminated_during_its_parallel_load_drops_the_partial_database(signum, seeded_db, target_db,
                                                                                  workdir, pg_server):
    """SIGTERM (Ansible's timeout, an operator's kill) or SIGHUP (a lost ssh or kubectl exec session) while the
    statements after the rows run."""
    import json
    import signal
    import subprocess
    import sys

    from support import ROOT

    slow = edited_plain_backup(seeded_db, workdir, lambda text: text + b"SELECT pg_sleep(60);\n")
    target = target_db()
    args = {"url": target, "src": slow, "verify_checksum": False, "jobs": 2}
    script = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'tests')!r}); import support; "
              f"run = support.call_module('pg_restore', json.loads({json.dumps(json.dumps(args))})); "
              "print(json.dumps(run.result))")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from ansible.module_utils.restore_runner import staging_name

        loading = staging_name(parse_url(target).dbname)  # loaded under this name, renamed when complete
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not pg_server.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query LIKE '%%pg_sleep%%'", (loading,)):
            time.sleep(0.1)
        assert sql(with_database(target, loading), "SELECT count(*) FROM users") == [(50,)]  # a partial load
        assert not database_exists(pg_server, target)  # nothing half loaded under the target's name
        proc.send_signal(getattr(signal, signum))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failed"] and "interrupted" in result["msg"] and "was dropped" in result["msg"], (result, err)
    assert not database_exists(pg_server, target) and not database_exists(pg_server, with_database(target, loading))
