"""The running app's queries: which statements count, where they come from, how a report shows them."""

from __future__ import annotations

import pytest
from ansible.module_utils.app_queries import dml_only, from_files, shown
from ansible.module_utils.operator_error import OperatorError


@pytest.mark.parametrize(("text", "kept"), [
    ("SELECT id, email FROM users WHERE id = $1", True),
    ("INSERT INTO users (name) VALUES ($1) RETURNING id;", True),
    ("UPDATE deployments SET status = $1 WHERE id = $2", True),
    ("DELETE FROM user_roles WHERE user_id = $1", True),
    ("WITH x AS (SELECT 1) SELECT * FROM x", True),
    ("SET search_path = app", False),
    ("ALTER ROLE app PASSWORD 'secret'", False),
    ("BEGIN", False),
    ("SELECT 1; SELECT 2", False),
    ("SELEC oops", False),
])
def test_only_plain_dml_is_an_app_query(text, kept):
    assert (dml_only(text) is not None) is kept


def test_query_files_give_their_statements_and_say_what_they_skip(tmp_path):
    path = tmp_path / "queries.sql"
    path.write_text("-- the app's queries\nSELECT email FROM users WHERE id = $1;\n\nSET lock_timeout = '1s';\n"
                    "UPDATE users SET name = $1 WHERE id = $2;\n")
    found = from_files([str(path)])
    assert [q["query"] for q in found if not q["skipped"]] == [
        "SELECT email FROM users WHERE id = $1", "UPDATE users SET name = $1 WHERE id = $2"]
    assert [q["query"] for q in found if q["skipped"]] == ["SET lock_timeout = '1s'"]
    with pytest.raises(OperatorError, match="cannot be read"):
        from_files([str(tmp_path / "missing.sql")])


def test_a_query_in_a_report_is_one_line_with_its_literals_masked():
    assert shown("SELECT *\n  FROM users WHERE token = 'abc'") == "SELECT * FROM users WHERE token = '********'"


def test_without_pglast_an_app_image_still_keeps_dml_by_its_first_word(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pglast", None)  # the app's image has no pglast
    assert dml_only("SELECT email FROM users WHERE id = $1;") == "SELECT email FROM users WHERE id = $1"
    assert dml_only("SET search_path = app") is None and dml_only("SELECT 1; SELECT 2") is None


@pytest.mark.db
def test_a_parameter_whose_type_cannot_be_inferred_is_typed_so_the_query_is_still_checked(new_database, tmp_path):
    import psycopg2
    from ansible.module_utils.app_queries import prepare_all

    url = new_database("rm_app_queries")
    queries = [{"query": q, "source": "test"} for q in (
        "SELECT id FROM users WHERE ($1 IS NULL OR email = $2)",
        "SELECT json_build_object($1, id, $2, email) FROM users",
        "SELECT concat($1, email) FROM users",
        "SELECT id FROM users WHERE id = $1",
    )]
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
            before = prepare_all(cur, queries)
            cur.execute("ALTER TABLE users DROP COLUMN email")
            after = prepare_all(cur, queries)
    finally:
        conn.rollback()
        conn.close()
    assert all(r["ok"] for r in before.values()), before
    # Once email is gone, the three whose parameters needed a type are found broken, for the schema's reason.
    broken = {q: r for q, r in after.items() if not r["ok"]}
    assert set(broken) == {q["query"] for q in queries[:3]}
    assert all(r["sqlstate"] == "42703" and 'column "email" does not exist' in r["error"] for r in broken.values())


def test_a_query_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "queries.sql"
    path.write_bytes(b"SELECT 'caf\xe9' FROM users;")
    with pytest.raises(OperatorError) as err:
        from_files([str(path)])
    assert str(path) in err.value.message and "not UTF-8" in err.value.message
