"""pg_inspect on a real PostgreSQL: facts, smoke queries, monitoring, schema comparison, read-only."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from ansible.module_utils.pg_connection import parse_url
from ansible.module_utils.smoke_queries import run_smoke_queries
from support import ROOT, ansible_env, run_module, run_playbook, url_with_credentials

pytestmark = pytest.mark.db

REVISION = "a1b2c3d4e5f6"
SCHEMA_SQL = """
CREATE TABLE users (
    id serial PRIMARY KEY,
    email varchar(255) NOT NULL UNIQUE,
    email_verified boolean
);
CREATE TABLE releases (
    id serial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id),
    status text NOT NULL DEFAULT 'draft'
);
CREATE INDEX ix_releases_status ON releases (status);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, what text);
"""
DATA_SQL = f"""
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('{REVISION}');
INSERT INTO users (email) VALUES ('a@example.org'), ('b@example.org'), ('c@example.org');
INSERT INTO releases (user_id, status) VALUES (1, 'draft'), (1, 'live'), (2, 'live'), (3, 'draft'), (3, 'gone');
INSERT INTO audit.events (what) VALUES ('created');
"""
COUNTS = {"users": 3, "releases": 5, "audit.events": 1}


def _db(url: str) -> str:
    return parse_url(url).dbname


@pytest.fixture
def app_db(pg_server, new_database) -> str:
    """A database with users, releases (FK, index, default), audit.events and an alembic_version row."""
    url = new_database("inspect")
    pg_server.execute(SCHEMA_SQL + DATA_SQL, dbname=_db(url))
    return url


def _inspect(args: dict, check: bool = False, real: bool = False) -> dict:
    run = run_module("pg_inspect", args, check=check, real=real)
    assert run.rc == 0, run.output
    assert run.result["changed"] is False
    return run.result


def _counts(pg_server, url: str) -> dict:
    rows = pg_server.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM releases), (SELECT count(*) FROM audit.events)",
        dbname=_db(url))
    return dict(zip(["users", "releases", "audit.events"], rows[0], strict=True))


def test_reads_revision_exact_row_counts_and_server_facts(pg_server, app_db):
    result = _inspect({"url": app_db}, real=True)  # this module's run through the real ansible
    assert result["revision"] == [REVISION]
    # Exact counts, the version table left out, tables outside public named with their schema.
    assert result["row_counts"] == COUNTS
    assert result["tables"] == 3
    assert result["database"] == _db(app_db)
    assert result["server_version"] == pg_server.version
    assert result["database_size_bytes"] > 1_000_000
    assert result["schema"] is None and result["monitoring"] is None
    assert result["smoke"] == [] and result["schema_diff"] == []


def test_no_version_table_means_no_revision(pg_server, new_database):
    url = new_database("inspect")
    pg_server.execute(SCHEMA_SQL, dbname=_db(url))
    result = _inspect({"url": url, "row_counts": False})
    assert result["revision"] == []
    assert result["row_counts"] is None
    assert result["tables"] == 3


def test_smoke_queries_report_results_and_failures_without_failing_the_module(app_db):
    queries = [
        "SELECT count(*) FROM users",
        "SELECT email FROM users ORDER BY id",
        "SELECT 1.50::numeric, 'ignored'",
        "SELECT no_such_column FROM users",
        "SELECT 1 WHERE false",
    ]
    smoke = _inspect({"url": app_db, "row_counts": False, "smoke_queries": queries})["smoke"]
    assert [s["query"] for s in smoke] == queries
    assert [s["ok"] for s in smoke] == [True, True, True, False, True]
    assert smoke[0]["result"] == 3 and smoke[0]["rows"] == 1 and smoke[0]["error"] is None
    assert smoke[1]["result"] == "a@example.org" and smoke[1]["rows"] == 3
    assert smoke[2]["result"] == "1.50"
    assert "no_such_column" in smoke[3]["error"] and smoke[3]["result"] is None
    assert smoke[4]["result"] is None and smoke[4]["rows"] == 0
    assert all(isinstance(s["duration_s"], float) for s in smoke)


def test_writing_smoke_queries_are_refused_and_the_data_is_unchanged(pg_server, app_db):
    before = _counts(pg_server, app_db)
    queries = [
        "DELETE FROM releases",
        "UPDATE users SET email = 'x@example.org' WHERE id = 1",
        "CREATE TABLE sneaky (id int)",
        # Leaving the read-only transaction with a second statement is refused before it runs.
        "COMMIT; DELETE FROM releases",
        "SELECT nextval('users_id_seq')",
    ]
    smoke = _inspect({"url": app_db, "row_counts": False, "smoke_queries": queries})["smoke"]
    assert [s["ok"] for s in smoke] == [False] * len(queries)
    assert "read-only transaction" in smoke[0]["error"]
    assert "read-only transaction" in smoke[1]["error"]
    assert "read-only transaction" in smoke[2]["error"]
    assert "exactly one SQL statement" in smoke[3]["error"]
    assert "read-only transaction" in smoke[4]["error"]
    assert _counts(pg_server, app_db) == before == COUNTS
    assert pg_server.execute("SELECT email FROM users WHERE id = 1", dbname=_db(app_db)) == [
        ("a@example.org",)]
    assert pg_server.execute("SELECT to_regclass('sneaky')", dbname=_db(app_db)) == [(None,)]
    assert pg_server.execute("SELECT last_value FROM users_id_seq", dbname=_db(app_db)) == [(3,)]


def test_a_smoke_query_is_cancelled_by_its_statement_timeout(app_db):
    conn = psycopg2.connect(app_db)
    conn.autocommit = True
    try:
        first, second = run_smoke_queries(conn, ["SELECT pg_sleep(5)", "SELECT 42"], timeout_s=1)
    finally:
        conn.close()
    assert first["ok"] is False and "statement timeout" in first["error"]
    assert first["duration_s"] < 4
    # The connection is usable again for the next query.
    assert second["ok"] is True and second["result"] == 42


def test_monitoring_reports_connections_sizes_and_index_usage_without_pg_stat_statements(pg_server, app_db):
    monitoring = _inspect({"url": app_db, "monitoring": True})["monitoring"]
    assert monitoring["connections"].get("active", 0) >= 1  # the module's own session
    sizes = {t["table"]: t for t in monitoring["table_sizes"]}
    assert {"users", "releases", "audit.events"} <= set(sizes)
    assert sizes["users"]["total_bytes"] >= sizes["users"]["table_bytes"] > 0
    assert [t["total_bytes"] for t in monitoring["table_sizes"]] == sorted(
        (t["total_bytes"] for t in monitoring["table_sizes"]), reverse=True)
    usage = {i["index"]: i for i in monitoring["index_usage"]}
    assert usage["ix_releases_status"]["unique"] is False and usage["users_pkey"]["unique"] is True
    assert "audit.events_pkey" in usage
    assert all(not usage[u["index"]]["unique"] for u in monitoring["unused_indexes"])
    assert monitoring["lock_waits"] == []
    assert pg_server.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'",
                             dbname=_db(app_db)) == []
    assert monitoring["top_statements"] is None
    assert any("pg_stat_statements" in note for note in monitoring["notes"])
    assert monitoring["database_size_bytes"] > 0 and monitoring["taken_at"].endswith("+00:00")


def test_pg_stat_statements_installed_but_not_preloaded_is_a_note_not_a_failure(pg_server, app_db):
    if not pg_server.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"):
        pytest.skip("this server does not ship pg_stat_statements")
    if pg_server.execute("SHOW shared_preload_libraries")[0][0]:
        pytest.skip("this server preloads libraries; the not-loaded path cannot be provoked")
    pg_server.execute("CREATE EXTENSION pg_stat_statements", dbname=_db(app_db))
    monitoring = _inspect({"url": app_db, "monitoring": True})["monitoring"]
    assert monitoring["top_statements"] is None
    assert any(note.startswith("top_statements: not available") and "shared_preload_libraries" in note
               for note in monitoring["notes"]), monitoring["notes"]
    # The failed section does not spoil the ones after it (it ran under a savepoint).
    assert monitoring["connections"] and monitoring["table_sizes"]


def test_monitoring_lists_a_lock_wait_with_the_blocking_pid(pg_server, app_db):
    holder = psycopg2.connect(app_db)
    waiter = psycopg2.connect(app_db)
    thread = None
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
            cur.execute("UPDATE users SET email_verified = true WHERE id = 1")  # holds the row lock
        with waiter.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            waiter_pid = cur.fetchone()[0]

        def wait_for_the_row():
            with waiter.cursor() as cur:
                cur.execute("UPDATE users SET email_verified = false WHERE id = 1")

        thread = threading.Thread(target=wait_for_the_row)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pg_server.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (waiter_pid,)) != [("Lock",)]:
            time.sleep(0.1)
        monitoring = _inspect({"url": app_db, "row_counts": False, "monitoring": True})["monitoring"]
        waits = {w["pid"]: w for w in monitoring["lock_waits"]}
        assert waiter_pid in waits, monitoring["lock_waits"]
        assert waits[waiter_pid]["blocked_by"] == [holder_pid]
        assert "UPDATE users" in waits[waiter_pid]["query"]
        assert monitoring["connections"].get("idle in transaction", 0) >= 1
    finally:
        holder.rollback()
        if thread is not None:
            thread.join(timeout=10)
        waiter.rollback()
        holder.close()
        waiter.close()


def test_compare_with_an_identical_database_is_empty_until_one_is_altered(pg_server, app_db, new_database):
    reference = new_database("inspect_ref")
    # Same schema, no data and no version table: neither takes part in the comparison.
    pg_server.execute(SCHEMA_SQL, dbname=_db(reference))
    assert _inspect({"url": app_db, "row_counts": False, "compare_with": reference})["schema_diff"] == []

    pg_server.execute("UPDATE users SET email_verified = false; "
                      "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL; "
                      "ALTER TABLE users ADD COLUMN nickname text; "
                      "DROP INDEX ix_releases_status; "
                      "ALTER TABLE releases ALTER COLUMN status SET DEFAULT 'new'", dbname=_db(app_db))
    pg_server.execute("CREATE TABLE user_roles (user_id int REFERENCES users (id), role text)",
                      dbname=_db(reference))
    result = _inspect({"url": app_db, "row_counts": False, "compare_with": reference})
    assert result["schema_diff"] == [
        "column releases.status: default differs (live 'new'::text, expected 'draft'::text)",
        "index ix_releases_status missing (CREATE INDEX ix_releases_status ON public.releases USING btree (status))",
        "table user_roles missing",
        "column users.email_verified: nullable differs (live NOT NULL, expected NULL)",
        "column users.nickname only in live (text NULL)",
    ]
    assert result["schema"] is None


def test_expected_schema_round_trips_through_ansible_and_catches_changes(pg_server, app_db):
    snapshot = _inspect({"url": app_db, "row_counts": False, "schema": True})["schema"]
    users = snapshot["tables"]["users"]
    assert users["columns"]["email"] == {"type": "character varying(255)", "nullable": False, "default": None,
                                         "identity": None, "generated": None}
    assert users["constraints"]["users_email_key"] == {"type": "UNIQUE", "definition": "UNIQUE (email)"}
    assert snapshot["tables"]["releases"]["constraints"]["releases_user_id_fkey"]["definition"] == (
        "FOREIGN KEY (user_id) REFERENCES users(id)")
    assert snapshot["tables"]["releases"]["indexes"] == {
        "ix_releases_status": "CREATE INDEX ix_releases_status ON public.releases USING btree (status)"}
    assert snapshot["tables"]["audit.events"]["columns"]["id"]["identity"] == "always"
    assert "alembic_version" not in snapshot["tables"]
    assert _inspect({"url": app_db, "row_counts": False, "expected_schema": snapshot})["schema_diff"] == []

    pg_server.execute("ALTER TABLE releases DROP CONSTRAINT releases_user_id_fkey; "
                      "ALTER TABLE releases ADD CONSTRAINT releases_user_id_fkey FOREIGN KEY (user_id) "
                      "REFERENCES users (id) ON DELETE CASCADE; "
                      "ALTER TABLE users ALTER COLUMN email TYPE text; "
                      "CREATE INDEX ix_users_email_verified ON users (email_verified)",
                      dbname=_db(app_db))
    diff = _inspect({"url": app_db, "row_counts": False, "expected_schema": snapshot})["schema_diff"]
    assert diff == [
        "constraint releases.releases_user_id_fkey differs (live FOREIGN KEY (user_id) REFERENCES users(id) "
        "ON DELETE CASCADE; expected FOREIGN KEY (user_id) REFERENCES users(id))",
        "column users.email: type differs (live text, expected character varying(255))",
        "index ix_users_email_verified only in live "
        "(CREATE INDEX ix_users_email_verified ON public.users USING btree (email_verified))",
    ]


def test_a_registered_snapshot_templated_back_in_a_playbook_compares_equal(pg_server, app_db, tmp_path):
    # Defaults with braces and Jinja-like text must survive register + "{{ snap.schema }}" unchanged.
    pg_server.execute("ALTER TABLE releases ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'; "
                      "ALTER TABLE releases ADD COLUMN note text DEFAULT '{{ not a template }}'",
                      dbname=_db(app_db))
    playbook = tmp_path / "round_trip.yml"
    playbook.write_text(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - pg_inspect: {{url: "{app_db}", row_counts: false, schema: true}}
      register: snap
    - pg_inspect:
        url: "{app_db}"
        row_counts: false
        expected_schema: "{{{{ snap.schema }}}}"
      register: again
    - ansible.builtin.assert:
        that:
          - again.schema_diff == []
          - snap.schema.tables.releases.columns.metadata.default == "'{{}}'::jsonb"
          - again is not changed and snap is not changed
""")
    facts = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    run = run_playbook(str(playbook), inventory="localhost,", extra_vars=facts)
    assert run.rc == 0, run.output


def test_check_mode_reports_the_same_facts(app_db):
    args = {"url": app_db, "schema": True, "smoke_queries": ["SELECT count(*) FROM releases"]}
    normal, checked = _inspect(args), _inspect(args, check=True)
    for key in ("revision", "row_counts", "tables", "schema", "schema_diff", "server_version"):
        assert checked[key] == normal[key], key
    assert checked["smoke"][0]["result"] == normal["smoke"][0]["result"] == 5


def test_compare_with_and_expected_schema_cannot_be_combined(app_db):
    run = run_module("pg_inspect", {"url": app_db, "compare_with": app_db, "expected_schema": {"tables": {}}})
    assert run.rc != 0 and "mutually exclusive" in run.result.get("msg", "")


def test_an_expected_schema_that_is_not_a_snapshot_fails_with_a_hint(app_db):
    run = run_module("pg_inspect", {"url": app_db, "expected_schema": {"users": {}}})
    assert run.rc != 0
    assert "not a schema snapshot" in run.result["msg"] and "schema: true" in run.result["hint"]


def test_a_wrong_password_fails_with_a_hint_and_never_shows_the_password(app_db, password_role):
    name, password = password_role
    wrong = f"{password}-wrong"
    run = run_module("pg_inspect", {"url": url_with_credentials(app_db, name, wrong)})
    assert run.rc != 0
    assert "Cannot connect" in run.result["msg"] and "password" in run.result["hint"]
    assert wrong not in run.output

    # With the right password (also as compare_with) it works, and neither password is echoed.
    good = url_with_credentials(app_db, name, password)
    run = run_module("pg_inspect", {"url": good, "compare_with": good, "smoke_queries": ["SELECT current_user"]})
    assert run.rc == 0, run.output
    assert run.result["smoke"][0]["result"] == name and run.result["schema_diff"] == []
    assert password not in run.output

    run = run_module("pg_inspect", {"url": good, "compare_with": url_with_credentials(app_db, name, wrong)})
    assert run.rc != 0 and "Cannot connect" in run.result["msg"]
    assert wrong not in run.output and password not in run.output


def test_ansible_doc_renders_the_module_documentation():
    proc = subprocess.run(["ansible-doc", "-M", "library", "pg_inspect"], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("compare_with", "expected_schema", "smoke_queries", "schema_diff", "top_statements"):
        assert word in proc.stdout
    assert "pg_inspect" in proc.stdout
