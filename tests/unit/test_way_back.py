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
    assert found["b2"] == {"tables": ["users"], "created": ["prefs"]}
    assert found["d4"] == {"tables": ["legacy"], "created": []}  # prefs is new: created earlier in the plan


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
