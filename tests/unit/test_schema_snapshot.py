"""Schema snapshots compared (module_utils/schema_snapshot.py): pure, no server."""

import copy
import json

import pytest
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.schema_snapshot import check_snapshot, diff_schemas


def _column(type_="integer", nullable=True, default=None, identity=None, generated=None):
    return {"type": type_, "nullable": nullable, "default": default, "identity": identity, "generated": generated}


BASE = {
    "format": 1,
    "tables": {
        "users": {
            "columns": {
                "id": _column(nullable=False, identity="by default"),
                "email": _column("character varying(255)", nullable=False),
                "email_verified": _column("boolean", nullable=True, default="false"),
            },
            "indexes": {"ix_users_email": "CREATE INDEX ix_users_email ON public.users USING btree (email)"},
            "constraints": {"users_pkey": {"type": "PRIMARY KEY", "definition": "PRIMARY KEY (id)"}},
        },
        "releases": {
            "columns": {"id": _column(nullable=False), "status": _column("text"), "user_id": _column()},
            "indexes": {
                "ix_releases_status": "CREATE INDEX ix_releases_status ON public.releases USING btree (status)"},
            "constraints": {
                "releases_pkey": {"type": "PRIMARY KEY", "definition": "PRIMARY KEY (id)"},
                "fk_releases_user": {"type": "FOREIGN KEY", "definition": "FOREIGN KEY (user_id) REFERENCES users(id)"},
            },
        },
        "audit.events": {
            "columns": {"id": _column()},
            "indexes": {"ix_events_id": "CREATE INDEX ix_events_id ON audit.events USING btree (id)"},
            "constraints": {},
        },
    },
    "views": {"active_users": {"kind": "view", "definition": " SELECT id FROM users;"}},
    "sequences": {"users_id_seq": {"type": "integer", "start": 1, "increment": 1, "min": 1, "max": 2147483647,
                                   "cycle": False}},
    "enums": {"deployment_status": ["pending", "running", "done"]},
}


def _changed(mutate):
    live = copy.deepcopy(BASE)
    mutate(live)
    return diff_schemas(live, BASE)


def test_identical_snapshots_have_no_differences():
    assert diff_schemas(copy.deepcopy(BASE), BASE) == []


def test_snapshot_survives_a_json_round_trip_unchanged():
    assert diff_schemas(json.loads(json.dumps(BASE)), BASE) == []


def test_table_added_and_removed_are_named_once_not_per_column():
    def mutate(s):
        s["tables"]["user_roles"] = {"columns": {"id": _column()}, "indexes": {}, "constraints": {}}
        del s["tables"]["releases"]

    assert _changed(mutate) == ["table releases missing", "table user_roles only in live"]


def test_column_added_and_removed():
    def mutate(s):
        del s["tables"]["users"]["columns"]["email"]
        s["tables"]["users"]["columns"]["nickname"] = _column("text")

    assert _changed(mutate) == [
        "column users.email missing (character varying(255) NOT NULL)",
        "column users.nickname only in live (text NULL)",
    ]


@pytest.mark.parametrize("field, value, expected", [
    ("nullable", False, "column users.email_verified: nullable differs (live NOT NULL, expected NULL)"),
    ("type", "text", "column users.email_verified: type differs (live text, expected boolean)"),
    ("default", None, "column users.email_verified: default differs (live none, expected false)"),
    ("identity", "always", "column users.email_verified: identity differs (live always, expected none)"),
    ("generated", "stored: (id * 2)",
     "column users.email_verified: generated differs (live stored: (id * 2), expected none)"),
])
def test_column_attribute_changes_name_the_attribute_and_both_values(field, value, expected):
    def mutate(s):
        s["tables"]["users"]["columns"]["email_verified"][field] = value

    assert _changed(mutate) == [expected]


def test_index_added_removed_and_changed():
    def mutate(s):
        del s["tables"]["releases"]["indexes"]["ix_releases_status"]
        s["tables"]["users"]["indexes"]["ix_users_email"] = (
            "CREATE UNIQUE INDEX ix_users_email ON public.users USING btree (email)")
        s["tables"]["users"]["indexes"]["ix_users_new"] = "CREATE INDEX ix_users_new ON public.users USING btree (id)"

    diff = _changed(mutate)
    assert diff[0].startswith("index ix_releases_status missing (CREATE INDEX ix_releases_status")
    assert diff[1].startswith("index ix_users_email differs (live CREATE UNIQUE INDEX")
    assert diff[2].startswith("index ix_users_new only in live")
    assert len(diff) == 3


def test_indexes_outside_public_are_named_with_their_schema():
    def mutate(s):
        s["tables"]["audit.events"]["indexes"] = {}

    assert _changed(mutate) == [
        "index audit.ix_events_id missing (CREATE INDEX ix_events_id ON audit.events USING btree (id))"]


def test_constraint_added_removed_and_changed():
    def mutate(s):
        del s["tables"]["releases"]["constraints"]["fk_releases_user"]
        s["tables"]["users"]["constraints"]["users_pkey"]["definition"] = "PRIMARY KEY (id, email)"
        s["tables"]["users"]["constraints"]["uq_users_email"] = {"type": "UNIQUE", "definition": "UNIQUE (email)"}

    assert _changed(mutate) == [
        "constraint releases.fk_releases_user missing (FOREIGN KEY (user_id) REFERENCES users(id))",
        "constraint users.uq_users_email only in live (UNIQUE (email))",
        "constraint users.users_pkey differs (live PRIMARY KEY (id, email); expected PRIMARY KEY (id))",
    ]


def test_constraint_type_change_alone_is_a_difference():
    def mutate(s):
        s["tables"]["users"]["constraints"]["users_pkey"]["type"] = "UNIQUE"

    assert _changed(mutate) == [
        "constraint users.users_pkey: type differs (live UNIQUE, expected PRIMARY KEY)"]


def test_views_sequences_and_enums_are_compared():
    def mutate(s):
        s["views"]["active_users"]["definition"] = " SELECT id, email FROM users;"
        s["sequences"]["users_id_seq"]["increment"] = 10
        s["enums"]["deployment_status"].append("failed")
        s["enums"]["release_kind"] = ["major", "minor"]

    assert _changed(mutate) == [
        "view active_users: definition differs (live  SELECT id, email FROM users;; expected  SELECT id FROM users;)",
        "sequence users_id_seq: increment differs (live 10, expected 1)",
        "enum deployment_status: labels differ (live pending, running, done, failed; expected pending, running, done)",
        "enum release_kind only in live",
    ]


def test_direction_is_live_versus_expected():
    live = copy.deepcopy(BASE)
    live["tables"]["users"]["columns"]["email_verified"]["nullable"] = False
    assert diff_schemas(BASE, live) == [
        "column users.email_verified: nullable differs (live NULL, expected NOT NULL)"]


def test_a_snapshot_without_optional_sections_compares_by_tables():
    minimal = {"format": 1, "tables": copy.deepcopy(BASE["tables"])}
    assert diff_schemas(minimal, {"format": 1, "tables": copy.deepcopy(BASE["tables"])}) == []


@pytest.mark.parametrize("bad", [None, [], {"schema": {}}, {"tables": []}, {"format": 2, "tables": {}}])
def test_check_snapshot_refuses_what_is_not_a_snapshot(bad):
    with pytest.raises(OperatorError) as err:
        check_snapshot(bad)
    assert "expected_schema" in err.value.message and err.value.hint


def test_check_snapshot_accepts_a_snapshot():
    assert check_snapshot(BASE) is BASE
