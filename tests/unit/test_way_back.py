"""The way back from each revision: reversible, lossy or irreversible, and what the automatic rollback does."""

from __future__ import annotations

import pytest
from ansible.module_utils.way_back import classify, losses, plan, rollback_method, touched


def rev(revision: str, sql: str, downgrade_sql: str | None = "SELECT 1;", kind: str = "ok", error=None) -> dict:
    return {"revision": revision, "sql": f"BEGIN;\n{sql}\nCOMMIT;\n", "downgrade": kind,
            "downgrade_sql": downgrade_sql, "downgrade_error": error}


ADD_COLUMN = rev("a1", "ALTER TABLE users ADD COLUMN nickname text;", "ALTER TABLE users DROP COLUMN nickname;")
BACKFILL = rev("b2", "CREATE TABLE prefs (id bigint);\nUPDATE users SET name = lower(name) WHERE id > 0;",
               None, kind="raises")
INDEX = rev("c3", "CREATE INDEX ix ON users (name);", "DROP INDEX ix;")


def test_what_a_downgrade_throws_away():
    assert losses("ALTER TABLE users DROP COLUMN nickname, DROP COLUMN age;\nDROP TABLE audit, prefs;\n"
                  "DROP INDEX ix;\nDELETE FROM alembic_version WHERE version_num = 'x';\nTRUNCATE events;") == [
        "column users.nickname", "column users.age", "table audit", "table prefs", "rows of events"]
    assert losses("DROP INDEX ix;") == [] and losses(None) == []


def test_the_tables_a_revision_touches_and_creates_new_ones_are_not_touched():
    found = touched([BACKFILL, rev("d4", "INSERT INTO prefs VALUES (1);\nDROP TABLE legacy;")])
    assert found["b2"] == {"tables": ["users"], "created": ["prefs"], "rewrites": ["users"], "objects": []}
    # prefs is new: created earlier in the plan
    assert found["d4"] == {"tables": ["legacy"], "created": [], "rewrites": [], "objects": []}


def test_a_table_outside_public_or_with_an_odd_name_is_named_with_its_schema_quoted_as_postgresql_quotes():
    found = touched([rev("s1", 'UPDATE tenant_b.items SET v = upper(v);\nALTER TABLE "Tenant A"."Odd""Name" '
                              'ADD COLUMN x int;\nCREATE TABLE "Audit" (id int);\nALTER TABLE "user" ADD y int;')])
    assert found["s1"]["tables"] == ["tenant_b.items", '"Tenant A"."Odd""Name"', '"user"']
    assert found["s1"]["created"] == ['"Audit"']


def test_a_downgrade_that_drops_through_cascade_a_schema_or_a_do_block_is_lossy():
    for sql in ("DROP SCHEMA tenant_b CASCADE;", "DROP TYPE mood CASCADE;",
                "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'items'; END $$;"):
        entry = rev("x1", "SELECT 1;", sql)
        assert classify(entry, {"round_trip": "ok"})["kind"] == "lossy", sql
    assert losses("DROP SCHEMA tenant_b CASCADE;") == ["schema tenant_b and every table in it"]


def test_a_data_migration_whose_downgrade_leaves_the_rows_alone_is_irreversible():
    rewrite = rev("d1", "UPDATE users SET name = upper(name);", "SELECT 1;")
    assert classify(rewrite, {"round_trip": "ok"}, ["users"])["kind"] == "irreversible"
    undone = rev("d2", "UPDATE users SET name = upper(name);", "UPDATE users SET name = lower(name);")
    assert classify(undone, {"round_trip": "ok"}, ["users"])["kind"] == "reversible"
    step = plan([rewrite], [{"revision": "d1", "round_trip": "ok"}])[0]
    assert step["kind"] == "irreversible" and step["way_back"]["method"] == "restore-tables"


def test_a_revision_that_creates_more_than_tables_is_never_taken_back_by_a_table_restore():
    enum = rev("t1", "CREATE TYPE mood AS ENUM ('ok');\nALTER TABLE users ADD COLUMN mood mood;", None, kind="empty")
    step = plan([enum], [], allow_restore=True)[0]
    assert step["objects"] and step["way_back"]["method"] == "full-restore"
    assert "more than tables" in step["way_back"]["why"]
    assert plan([enum], [])[0]["way_back"]["method"] == "forward-fix"


def test_a_downgrade_the_walk_down_never_reached_is_not_taken_automatically():
    stopped = {"round_trip": "not proven", "detail": "the walk down stopped at b2", "stopped": True}
    step = plan([INDEX], [{"revision": "c3", **stopped}])[0]
    assert step["kind"] == "irreversible" and not step["proven"]
    assert rollback_method([step], ["c3"])["method"] != "downgrade"


@pytest.mark.parametrize(("entry", "trip", "kind"), [
    (INDEX, {"round_trip": "ok"}, "reversible"),
    (ADD_COLUMN, {"round_trip": "ok"}, "lossy"),
    (BACKFILL, None, "irreversible"),
    (rev("e5", "SELECT 1;", kind="empty"), None, "irreversible"),
    (rev("f6", "SELECT 1;", None, error="NotImplementedError: no"), None, "irreversible"),
    (INDEX, {"round_trip": "differs", "detail": "index ix is missing"}, "irreversible"),
    (INDEX, {"round_trip": "failed", "detail": "boom"}, "irreversible"),
])
def test_each_revision_is_classified_from_its_downgrade_and_its_round_trip(entry, trip, kind):
    assert classify(entry, trip)["kind"] == kind


def test_a_round_trip_the_rehearsal_did_not_walk_is_not_proven():
    assert classify(INDEX, None) == {"kind": "reversible", "proven": False,
                                     "why": "its downgrade gives the schema back and drops no data"}


def test_each_kind_gets_its_way_back():
    steps = plan([ADD_COLUMN, BACKFILL, INDEX], [{"revision": "c3", "round_trip": "ok"}])
    assert [(e["revision"], e["kind"], e["way_back"]["method"]) for e in steps] == [
        ("a1", "lossy", "forward-fix"), ("b2", "irreversible", "restore-tables"), ("c3", "reversible", "downgrade")]
    allowed = plan([ADD_COLUMN], [], allow_lossy=True)
    assert allowed[0]["way_back"]["method"] == "downgrade" and "lossy, allowed" in allowed[0]["way_back"]["why"]
    unknown_sql = {**BACKFILL, "sql": None}  # nothing to know what it touched: the whole backup, if allowed
    assert plan([unknown_sql], [], allow_restore=True)[0]["way_back"]["method"] == "full-restore"
    assert plan([unknown_sql], [], allow_restore=False)[0]["way_back"]["method"] == "forward-fix"


def test_the_rollback_never_downgrades_through_an_irreversible_revision():
    steps = plan([INDEX, BACKFILL], [])
    assert rollback_method(steps, ["c3"])["method"] == "downgrade"
    both = rollback_method(steps, ["c3", "b2"])
    assert both["method"] == "restore-tables" and both["tables"] == ["users"] and both["created"] == ["prefs"]
    assert rollback_method(plan([ADD_COLUMN], []), ["a1"])["method"] == "forward-fix"
    assert rollback_method([], ["x"])["method"] == "downgrade"  # no plan (another project's rollback.yml)
