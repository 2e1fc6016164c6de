import copy
import json
from decimal import Decimal

import pytest
from ansible.module_utils.db_inspect import (
    check_snapshot,
    diff_schemas,
    json_value,
    mask_sql_secrets,
    qualified,
    split_statements,
)
from ansible.module_utils.operator_error import OperatorError


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


@pytest.mark.parametrize("sql, count", [
    ("SELECT 1", 1),
    ("SELECT 1;", 1),
    ("  ;; SELECT 1 ; ; ", 1),
    ("SELECT 1; SELECT 2", 2),
    ("COMMIT; DELETE FROM users", 2),
    ("SELECT ';' AS semi", 1),
    ("SELECT 'it''s; fine'", 1),
    ("SELECT E'a\\'; b'", 1),
    ('SELECT 1 AS "odd;name"', 1),
    ("SELECT $$;$$, $tag$ ; $$ ; $tag$", 1),
    ("SELECT 1 -- trailing; comment\n", 1),
    ("SELECT 1 /* a; /* nested; */ still; */", 1),
    ("-- only a comment", 0),
    ("", 0),
    ("SELECT a$b FROM t; SELECT 2", 2),
])
def test_split_statements_counts_top_level_statements(sql, count):
    assert len(split_statements(sql)) == count


def test_json_value_keeps_json_scalars_and_stringifies_the_rest():
    assert [json_value(v) for v in (None, True, 3, 2.5)] == [None, True, 3, 2.5]
    assert json_value(Decimal("1.50")) == "1.50"
    assert json_value(b"\x01\xff") == "\\x01ff"
    assert json_value(["a"]) == "['a']"


def test_mask_sql_secrets_hides_every_literal_and_truncates():
    assert mask_sql_secrets("ALTER ROLE app PASSWORD 'S3cr3t'") == "ALTER ROLE app PASSWORD '********'"
    for secret in ("E'Rot8ed\\'S3cret'", "U&'Rot8edS3cret'", "$p$Rot8edS3cret$p$", "$$Rot8edS3cret$$",
                   "'it''s Rot8edS3cret'"):
        masked = mask_sql_secrets(f"alter role r password {secret}; select 1 where a = 'b'")
        assert "Rot8ed" not in masked and "S3cret" not in masked and masked.endswith("where a = '********'")
    assert mask_sql_secrets("select * from users where id = $1") == "select * from users where id = $1"
    assert mask_sql_secrets(None) is None
    assert len(mask_sql_secrets("x" * 2000)) == 500


def test_qualified_names_public_objects_without_schema():
    assert qualified("public", "users") == "users"
    assert qualified("audit", "events") == "audit.events"


class _ScriptedCursor:
    """Plays the catalog's answers in order; records what was executed."""

    def __init__(self, columns, rows):
        self.columns, self.rows, self.executed, self.description = columns, rows, [], None

    def execute(self, query, params=None):
        self.executed.append(repr(query))
        self.description = [(c,) for c in self.columns] if "LIMIT 0" in repr(query) else None

    def fetchone(self):
        return ("public",)

    def fetchall(self):
        return self.rows


@pytest.mark.parametrize("mean_column", ["mean_exec_time", "mean_time"])
def test_top_statements_reads_either_generation_of_pg_stat_statements(mean_column):
    from ansible.module_utils.db_inspect import _top_statements

    total_column = mean_column.replace("mean", "total")
    cur = _ScriptedCursor(["queryid", "query", "calls", mean_column, total_column, "rows"],
                          [(42, "ALTER ROLE app PASSWORD 'S3cr3t'", 7, 12.34567, 86.4, 3)])
    notes: list[str] = []
    top = _top_statements(cur, notes)
    assert top == [{"queryid": 42, "query": "ALTER ROLE app PASSWORD '********'", "calls": 7,
                    "mean_exec_ms": 12.346, "total_exec_ms": 86.4, "rows": 3}]
    assert notes == []
    main_query = next(q for q in cur.executed if "ORDER BY" in q)
    assert f"Identifier('{mean_column}')" in main_query and f"Identifier('{total_column}')" in main_query
