"""pg_restore_tables on a real PostgreSQL: only the touched tables come back from the backup, every other table keeps
the writes made since, nothing is dropped, and what would break is refused before anything changes."""

from __future__ import annotations

import pytest
from support import revision_of, run_module, sql

pytestmark = pytest.mark.db

START = "8f1a2b3c4d5e"


@pytest.fixture
def migrated(chain_db, workdir):
    """A database at START with rows, its backup, then a 'migration' since: an irreversible rewrite of users, a
    table it created, and the app's writes to releases."""
    def make(fmt: str = "plain") -> tuple[str, str]:
        url = chain_db(revision=START, users=30)
        taken = run_module("pg_backup", {"url": url, "dest": str(workdir / "backups"), "format": fmt})
        assert taken.rc == 0, taken.output
        sql(url, "UPDATE users SET name = upper(name)")
        sql(url, "CREATE TABLE user_prefs (id bigint PRIMARY KEY, user_id int REFERENCES users (id))")
        sql(url, "INSERT INTO user_prefs VALUES (1, 1)")
        sql(url, "INSERT INTO releases (version, status) VALUES ('9.9', 'written-since')")
        sql(url, "UPDATE alembic_version SET version_num = '9c2b3f1a4e5d'")
        return url, taken.result["path"]
    return make


def restore(url: str, src: str, check: bool = False, **args):
    return run_module("pg_restore_tables", {"url": url, "src": src, "tables": ["users"], "created": ["user_prefs"],
                                            "revision": [START], "run_id": "t1", **args}, check=check)


@pytest.mark.parametrize("fmt", ["plain", "custom", "directory"])
def test_the_touched_table_comes_back_and_every_other_table_keeps_its_writes(migrated, fmt):
    url, src = migrated(fmt)
    run = restore(url, src)
    assert run.rc == 0, run.output
    assert run.result["rows"] == {"users": 30} and run.result["replaced_schema"] == "rm_replaced_t1"
    assert sql(url, "SELECT count(*) FROM users WHERE name <> upper(name)") == [(30,)]  # as the backup has them
    assert sql(url, "SELECT count(*) FROM releases WHERE status = 'written-since'") == [(1,)]  # kept
    assert revision_of(url) == [START]
    assert sql(url, "SELECT to_regclass('public.user_prefs')") == [(None,)]  # moved aside, not dropped ...
    assert sql(url, "SELECT count(*) FROM rm_replaced_t1.user_prefs") == [(1,)]
    assert sql(url, "SELECT count(*) FROM rm_replaced_t1.users WHERE name = upper(name)") == [(30,)]  # ... nor these
    # The restored table is whole again: its sequence, default, key and index as the backup has them.
    sql(url, "INSERT INTO users (name, email) VALUES ('new', 'new@example.com')")
    assert sql(url, "SELECT max(id) FROM users") == [(31,)]
    assert sql(url, "SELECT count(*) FROM pg_indexes WHERE tablename = 'users' AND schemaname = 'public'") == [(2,)]


def test_a_foreign_key_from_another_table_refuses_the_restore_before_anything_changes(migrated):
    url, src = migrated()
    sql(url, "CREATE TABLE audit (id int, user_id int REFERENCES users (id))")
    run = restore(url, src)
    assert run.rc != 0 and "foreign key audit_user_id_fkey of public.audit references users" in run.result["msg"]
    assert sql(url, "SELECT count(*) FROM users WHERE name = upper(name)") == [(30,)]
    assert revision_of(url) == ["9c2b3f1a4e5d"]
    assert sql(url, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rm_%'") == [(0,)]


def test_a_view_on_a_touched_table_refuses_the_restore(migrated):
    url, src = migrated()
    sql(url, "CREATE VIEW user_names AS SELECT name FROM users")
    run = restore(url, src)
    assert run.rc != 0 and "view public.user_names depends on users" in run.result["msg"]


def test_check_mode_and_a_damaged_backup_change_nothing(migrated):
    url, src = migrated()
    planned = restore(url, src, check=True)
    assert planned.rc == 0 and planned.result["planned"] is True and planned.result["changed"] is False
    assert revision_of(url) == ["9c2b3f1a4e5d"]
    with open(src, "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    damaged = restore(url, src)
    assert damaged.rc != 0 and "checksum mismatch" in damaged.result["msg"]
    assert sql(url, "SELECT count(*) FROM users WHERE name = upper(name)") == [(30,)]
    assert sql(url, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rm_%'") == [(0,)]


def test_the_swap_waits_at_most_lock_timeout_then_retries(migrated):
    """A long transaction holds users: each swap attempt gives up after lock_timeout and the run fails cleanly,
    leaving the live tables as they were and no side schema behind."""
    import psycopg2

    url, src = migrated()
    holder = psycopg2.connect(url)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE users IN ACCESS SHARE MODE")
            run = restore(url, src, lock_timeout="100ms", swap_retries=1)
    finally:
        holder.rollback()
        holder.close()
    assert run.rc != 0 and "lock timeout" in run.result["msg"]
    assert sql(url, "SELECT count(*) FROM users WHERE name = upper(name)") == [(30,)]
    assert revision_of(url) == ["9c2b3f1a4e5d"]
