"""migration_rehearsal on a real PostgreSQL: the running app's queries prepared after each pending revision (from a
query file and from pg_stat_statements on a server that loads it), and every downgrade walked back."""

from __future__ import annotations

import psycopg2
import pytest
from chain_copies import DROPS_EMAIL as CONTRACT
from chain_copies import GOOD_REVISION, HEAD, chain_copy, second
from support import revision_of, run_module, sql, with_database

pytestmark = pytest.mark.db

DROPS_EMAIL = second(CONTRACT)  # on top of GOOD_REVISION

FORGETS_ITS_INDEX = GOOD_REVISION.replace(
    'op.add_column("users", sa.Column("nickname", sa.String(50)))',
    'op.create_index("ix_users_name", "users", ["name"])',
).replace('op.drop_column("users", "nickname")', 'op.execute("SELECT 1")')


def rehearse(scratch: str, ini, *, live: str | None = None, queries=(), start=HEAD, target="f00d00000002", **args):
    run = run_module("migration_rehearsal", {"url": scratch, "config": str(ini), "start": start, "target": target,
                                             "query_files": [str(q) for q in queries],
                                             **({"live_url": live} if live else {}), **args})
    return run


def test_a_revision_that_drops_a_column_the_app_reads_is_named_with_the_query(new_database, tmp_path):
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION, DROPS_EMAIL)
    queries = tmp_path / "queries.sql"
    queries.write_text("SELECT id, email FROM users WHERE id = $1;\nSELECT nickname FROM users WHERE id = $1;\n"
                       "UPDATE users SET name = $1 WHERE id = $2;\n")
    run = rehearse(new_database("reh"), ini, queries=[queries])
    assert run.rc == 0, run.output
    found = run.result["queries"]
    # nickname does not exist yet at the start: not checkable; email is broken by f00d00000002, not f00d00000001
    assert found["checked"] == 2 and [q["query"] for q in found["not_checkable"]] == [
        "SELECT nickname FROM users WHERE id = $1"]
    [broken] = found["broken"]
    assert broken["revision"] == "f00d00000002" and broken["query"] == "SELECT id, email FROM users WHERE id = $1"
    assert broken["sqlstate"] == "42703" and 'column "email" does not exist' in broken["error"]
    assert run.result["at_target"] is True


def test_an_expand_only_revision_breaks_no_query_and_every_downgrade_goes_back(new_database, tmp_path):
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION)
    queries = tmp_path / "queries.sql"
    queries.write_text("SELECT id, email FROM users WHERE id = $1;\nINSERT INTO users (name, email) VALUES ($1, $2);")
    scratch = new_database("reh")
    run = rehearse(scratch, ini, queries=[queries], target="f00d00000001")
    assert run.rc == 0, run.output
    assert run.result["queries"]["broken"] == [] and run.result["queries"]["checked"] == 2
    assert run.result["round_trips"] == [{"revision": "f00d00000001", "round_trip": "ok", "detail": None}]
    assert revision_of(scratch) == ["f00d00000001"]  # left at the target for verify


def test_a_downgrade_that_does_not_give_the_schema_back_is_found(new_database, tmp_path):
    ini = chain_copy(tmp_path / "chain", FORGETS_ITS_INDEX)
    run = rehearse(new_database("reh"), ini, target="f00d00000001")
    [trip] = run.result["round_trips"]
    assert trip["round_trip"] == "differs" and "ix_users_name" in trip["detail"]


# f00d00000002 on top of FORGETS_ITS_INDEX: a column whose downgrade is a no-op (the walk down differs there).
KEEPS_ITS_COLUMN = DROPS_EMAIL.replace('"""test: drop users.email while the running app still reads it"""',
                                       '"""test: users.age, a downgrade that forgets it"""').replace(
    'op.drop_column("users", "email")', 'op.add_column("users", sa.Column("age", sa.Integer()))').replace(
    'op.add_column("users", sa.Column("email", sa.String(255), nullable=True))', 'op.execute("SELECT 1")')
# A downgrade that forgets the function its upgrade made: going up again fails ("already exists").
LEAVES_A_FUNCTION = GOOD_REVISION.replace(
    'op.add_column("users", sa.Column("nickname", sa.String(50)))',
    'op.execute("CREATE FUNCTION rm_answer() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$")',
).replace('op.drop_column("users", "nickname")', 'op.execute("SELECT 1")')


def test_the_walk_down_goes_on_below_a_revision_that_did_not_give_the_schema_back(new_database, tmp_path):
    """f00d00000002 forgets its column on the way down; f00d00000001 (below it) forgets its index: both are found,
    each on a scratch database rebuilt at the schema it expects."""
    ini = chain_copy(tmp_path / "chain", FORGETS_ITS_INDEX, KEEPS_ITS_COLUMN)
    scratch = new_database("reh")
    run = rehearse(scratch, ini, recreate=True)
    assert run.rc == 0, run.output
    trips = {t["revision"]: t for t in run.result["round_trips"]}
    assert trips["f00d00000002"]["round_trip"] == "differs" and "age" in trips["f00d00000002"]["detail"]
    assert trips["f00d00000001"]["round_trip"] == "differs" and "ix_users_name" in trips["f00d00000001"]["detail"]
    assert run.result["at_target"] is True and revision_of(scratch) == ["f00d00000002"]
    # Without leave to rebuild it, the walk stops there and says so: the revision below is not proven.
    stopped = rehearse(new_database("reh"), ini, recreate=False).result["round_trips"]
    assert stopped[0] == {"revision": "f00d00000001", "round_trip": "not proven", "stopped": True,
                          "detail": "the walk down stopped at f00d00000002"}


def test_a_downgrade_that_leaves_a_function_behind_is_irreversible_and_the_scratch_ends_at_the_target(
        new_database, tmp_path):
    ini = chain_copy(tmp_path / "chain", LEAVES_A_FUNCTION)
    scratch = new_database("reh")
    run = rehearse(scratch, ini, target="f00d00000001", recreate=True)
    assert run.rc == 0, run.output
    [trip] = run.result["round_trips"]
    assert trip["round_trip"] == "differs" and "already exists" in trip["detail"]
    assert run.result["at_target"] is True and revision_of(scratch) == ["f00d00000001"]
    assert sql(scratch, "SELECT rm_answer()") == [(42,)]


def test_a_downgrade_that_fails_is_found(new_database, tmp_path):
    raising = GOOD_REVISION.replace('op.drop_column("users", "nickname")', 'raise NotImplementedError("no way back")')
    run = rehearse(new_database("reh"), chain_copy(tmp_path / "chain", raising), target="f00d00000001")
    [trip] = run.result["round_trips"]
    assert trip["round_trip"] == "failed" and "no way back" in trip["detail"]
    assert run.result["at_target"] is True


def test_the_live_database_is_never_the_scratch(new_database, tmp_path):
    live = new_database("reh")
    run = rehearse(live, chain_copy(tmp_path / "chain", GOOD_REVISION), live=live, target="f00d00000001")
    assert run.rc != 0 and "is the live database" in run.result["msg"]


def test_the_queries_the_app_actually_runs_come_from_pg_stat_statements(stats_server, tmp_path):
    """A PostgreSQL 15 started with pg_stat_statements loaded: the app's queries are recorded by running them."""
    from ansible.module_utils.alembic_runner import MigrationRequest, run

    admin = psycopg2.connect(stats_server)
    admin.autocommit = True
    name = f"reh_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
        cur.execute(f'DROP DATABASE IF EXISTS "{name}_s"')
        cur.execute(f'CREATE DATABASE "{name}_s"')
    live, scratch = with_database(stats_server, name), with_database(stats_server, f"{name}_s")
    try:
        ini = chain_copy(tmp_path / "chain", GOOD_REVISION, DROPS_EMAIL)
        run(MigrationRequest(url=live, config=str(ini), revision=HEAD))
        sql(live, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        sql(live, "INSERT INTO users (name, email) VALUES ('ada', 'ada@example.com')")
        for _ in range(3):  # what the running app does
            sql(live, "SELECT id, email FROM users WHERE name = %s", ("ada",))
        result = rehearse(scratch, ini, live=live).result
        assert result["queries"]["sources"]["stat_statements"] >= 1
        broken = [b for b in result["queries"]["broken"] if b["source"] == "pg_stat_statements"]
        assert sorted((b["revision"], b["query"]) for b in broken) == [  # both as pg_stat_statements normalized them
            ("f00d00000002", "INSERT INTO users (name, email) VALUES ($1, $2)"),
            ("f00d00000002", "SELECT id, email FROM users WHERE name = $1")]
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'DROP DATABASE IF EXISTS "{name}_s" WITH (FORCE)')
        admin.close()


def test_a_chain_alembic_applies_only_in_one_run_is_rehearsed_in_one_run(new_database, pg_server):
    """optuna's chain re-creates an enum type an earlier revision created: Alembic applies it in one run only
    (its DDL memo), so one revision at a time fails; the rehearsal starts again on a new scratch database and
    applies it in one run, as the apply will."""
    from foreign_projects import optuna_ini

    scratch = new_database("reh")
    run = run_module("migration_rehearsal", {"url": scratch, "config": str(optuna_ini()), "target": "heads",
                                             "recreate": True, "compare_models": False})
    assert run.rc == 0, run.output
    assert len(run.result["pending"]) >= 10 and run.result["at_target"] is True
    trips = {t["revision"]: t for t in run.result["round_trips"]}
    assert trips["v3.0.0.c"]["round_trip"] == "failed"  # its downgrade is broken upstream
    assert all("only in one run" in t["detail"] for rev, t in trips.items() if rev != "v3.0.0.c")
    without = run_module("migration_rehearsal", {"url": new_database("reh"), "config": str(optuna_ini()),
                                                 "target": "heads", "compare_models": False})
    assert without.rc != 0 and "already exists" in without.result["msg"]  # no new scratch allowed: said plainly
