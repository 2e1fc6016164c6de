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
        binary = {"binary_min_bytes": 0} if fmt == "binary" else {}  # its rows in binary, small as they are
        taken = run_module("pg_backup", {"url": url, "dest": str(workdir / "backups"), "format": fmt, **binary})
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


def restore_while_users_is_locked(url: str, src: str, **args):
    """The restore while another session holds a lock on users (a long transaction of the app)."""
    import psycopg2

    holder = psycopg2.connect(url)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE users IN ACCESS SHARE MODE")
            return restore(url, src, **args)
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize("fmt", ["plain", "custom", "directory", "binary"])
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
    url, src = migrated()
    run = restore_while_users_is_locked(url, src, lock_timeout="100ms", swap_retries=1)
    assert run.rc != 0 and "lock timeout" in run.result["msg"]
    assert sql(url, "SELECT count(*) FROM users WHERE name = upper(name)") == [(30,)]
    assert revision_of(url) == ["9c2b3f1a4e5d"]


@pytest.fixture
def backed_up(chain_db, workdir):
    """A database at START with ``setup`` run before its (plain) backup and ``since`` after: URL and backup path."""
    def make(setup: str, since: str = "") -> tuple[str, str]:
        url = chain_db(revision=START, users=3)
        sql(url, setup)
        taken = run_module("pg_backup", {"url": url, "dest": str(workdir / "backups"), "format": "plain"})
        assert taken.rc == 0, taken.output
        if since:
            sql(url, since)
        sql(url, "UPDATE alembic_version SET version_num = '9c2b3f1a4e5d'")
        return url, taken.result["path"]
    return make


def restore_only(url: str, src: str, tables: list[str], run_id: str, check: bool = False, **args):
    return run_module("pg_restore_tables", {"url": url, "src": src, "tables": tables, "revision": [START],
                                            "run_id": run_id, **args}, check=check)


@pytest.mark.parametrize("schema", ['"Tenant A"', "public"])
def test_quoted_names_are_restored_and_nothing_of_the_load_touches_the_live_tables(backed_up, schema):
    """A schema and a table that need quotes (with a "" inside): the live table is moved aside with its sequence
    untouched (the load never set a live sequence), the restored default points at its own sequence."""
    table = f'{schema}."Odd""Name"'
    url, src = backed_up(f"CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE {table} (id serial PRIMARY KEY, v text);"
                         f"INSERT INTO {table} (v) VALUES ('a'), ('b'), ('c')",
                         f"INSERT INTO {table} (v) VALUES ('d'), ('e'); UPDATE {table} SET v = upper(v)")
    run = restore_only(url, src, [table], "q1")
    assert run.rc == 0, run.output
    name = table.removeprefix("public.")
    assert run.result["rows"] == {name: 3} and run.result["tables"] == [name]
    assert sql(url, f"SELECT string_agg(v, '' ORDER BY id) FROM {table}") == [("abc",)]
    assert sql(url, "SELECT string_agg(v, '' ORDER BY id) FROM rm_replaced_q1.\"Odd\"\"Name\"") == [("ABCDE",)]
    assert sql(url, "SELECT last_value FROM rm_replaced_q1.\"Odd\"\"Name_id_seq\"") == [(5,)]  # never rewound
    default = sql(url, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = %s::regclass", (table,))
    assert "rm_" not in default[0][0], default
    sql(url, f"INSERT INTO {table} (v) VALUES ('new')")
    assert sql(url, f"SELECT max(id) FROM {table}") == [(4,)]
    assert sql(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'rm_restore_q1'") == [(0,)]


def test_an_identity_column_is_restored_and_continues_from_the_backups_value(backed_up):
    url, src = backed_up("CREATE TABLE t_ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
                         "INSERT INTO t_ident (v) VALUES ('a'), ('b'), ('c')",
                         "INSERT INTO t_ident (v) VALUES ('d'), ('e')")
    run = restore_only(url, src, ["t_ident"], "i1")
    assert run.rc == 0, run.output
    assert sql(url, "SELECT count(*) FROM t_ident") == [(3,)]
    sql(url, "INSERT INTO t_ident (v) VALUES ('next')")  # the app's next insert works
    assert sql(url, "SELECT max(id) FROM t_ident") == [(4,)]
    assert sql(url, "SELECT count(*) FROM rm_replaced_i1.t_ident") == [(5,)]


def test_the_tables_moved_aside_lose_their_foreign_keys_so_the_live_tables_deletes_work(backed_up):
    url, src = backed_up("CREATE TABLE parent (id int PRIMARY KEY); INSERT INTO parent VALUES (1);"
                         "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));"
                         "CREATE TABLE gone_with (id int PRIMARY KEY, parent_id int REFERENCES parent (id) "
                         "ON DELETE CASCADE); INSERT INTO child VALUES (1, 1)",
                         "INSERT INTO parent VALUES (50); INSERT INTO child VALUES (50, 50);"
                         "INSERT INTO gone_with VALUES (50, 50)")
    run = restore_only(url, src, ["child", "gone_with"], "f1")
    assert run.rc == 0, run.output
    assert run.result["dropped_foreign_keys"] == ["rm_replaced_f1.child.child_parent_id_fkey",
                                                  "rm_replaced_f1.gone_with.gone_with_parent_id_fkey"]
    sql(url, "DELETE FROM parent WHERE id = 50")  # the app's delete: no kept row holds it back
    assert sql(url, "SELECT count(*) FROM rm_replaced_f1.child WHERE parent_id = 50") == [(1,)]
    assert sql(url, "SELECT count(*) FROM rm_replaced_f1.gone_with WHERE parent_id = 50") == [(1,)]  # not cascaded
    assert sql(url, "SELECT conname FROM pg_constraint WHERE conrelid = 'child'::regclass AND contype = 'f'") == [
        ("child_parent_id_fkey",)]  # the restored table keeps its own


def test_a_lock_timeout_names_the_tables_swaps_nothing_and_a_retry_with_the_same_run_id_works(migrated):
    url, src = migrated()
    run = restore_while_users_is_locked(url, src, lock_timeout="100ms", swap_retries=0)
    msg = run.result["msg"]
    assert run.rc != 0 and "lock timeout" in msg and "user_prefs, users" in msg and "Nothing was swapped" in msg
    assert run.result["locked_tables"] == ["users"] and "same run_id t1" in run.result["hint"]
    assert sql(url, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rm_%'") == [(0,)]
    assert revision_of(url) == ["9c2b3f1a4e5d"]
    again = restore(url, src)
    assert again.rc == 0 and again.result["changed"] is True, again.output
    assert revision_of(url) == [START]


def test_a_second_run_with_the_same_run_id_recognises_the_restore_is_done(migrated):
    url, src = migrated()
    first = restore(url, src)
    assert first.rc == 0 and first.result["changed"] is True, first.output
    for check in (True, False):
        again = restore(url, src, check=check)
        assert again.rc == 0 and again.result["changed"] is False, again.output
        assert again.result["already_done"] is True and "Already restored users" in again.result["msg"]
    assert sql(url, "SELECT count(*) FROM rm_replaced_t1.users WHERE name = upper(name)") == [(30,)]
    assert sql(url, "SELECT count(*) FROM users WHERE name <> upper(name)") == [(30,)] and revision_of(url) == [START]
    sql(url, "UPDATE alembic_version SET version_num = '9c2b3f1a4e5d'")  # moved on since: not the same restore
    moved_on = restore(url, src)
    assert moved_on.rc != 0 and "rm_replaced_t1 already exists" in moved_on.result["msg"]
