"""pg_restore on a real PostgreSQL, through the real `ansible` ad-hoc command.

Round trips backup -> restore in every format, idempotence through the database comment, the confirm
gate, check mode, and `src` as a directory of backups.
"""

from __future__ import annotations

import pytest
from ansible.module_utils.backup_manifest import manifest_path_for
from ansible.module_utils.pg_connection import parse_url
from support import database_exists, run_module, sql

REVISION = "1a2b3c4d5e6f"
SEED_SQL = f"""
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE releases (id serial PRIMARY KEY, user_id int REFERENCES users(id), metadata jsonb);
CREATE INDEX releases_metadata ON releases USING gin (metadata);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id int PRIMARY KEY, note text);
INSERT INTO users (email) VALUES ('ada@example.com'), ('bob@example.com'), ('cy@example.com');
INSERT INTO releases (user_id, metadata) VALUES (1, '{{"v": 1}}'), (2, '{{"v": 2}}');
INSERT INTO audit.events VALUES (1, 'seeded');
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('{REVISION}');
"""
EXPECTED_COUNTS = {"users": 3, "releases": 2, "audit.events": 1}


@pytest.fixture
def seeded_db(new_database):
    url = new_database("rm_src")
    sql(url, SEED_SQL)
    return url


def backup(url: str, dest, **args) -> dict:
    run = run_module("pg_backup", {"url": url, "dest": str(dest), **args})
    assert run.rc == 0, run.output
    return run.result


@pytest.mark.db
@pytest.mark.parametrize("fmt", ["binary", "custom", "directory", "plain", "tar"])
def test_round_trip_in_every_format_restores_same_rows_and_revision(fmt, seeded_db, target_db, workdir, pg_server):
    taken = backup(seeded_db, workdir, format=fmt, **({"binary_min_bytes": 0} if fmt == "binary" else {}))
    assert taken["alembic_revision"] == REVISION
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"]})

    assert run.rc == 0, run.output
    result = run.result
    assert result["changed"] is True and result["created"] is True and result["cleaned"] is False
    assert result["src"] == taken["path"]
    assert result["format"] == fmt
    assert result["alembic_revision"] == [REVISION]
    assert result["row_counts"] == EXPECTED_COUNTS
    assert result["tables"] == 3
    assert result["restore_duration_s"] <= result["duration_s"]
    assert result["load"]["method"].startswith("parallel")  # a database the restore made: jobs sessions
    query = "SELECT u.email, r.metadata->>'v' FROM users u LEFT JOIN releases r ON r.user_id = u.id ORDER BY 1"
    assert sql(target, query) == sql(seeded_db, query)
    comment = pg_server.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                                (parse_url(target).dbname,))[0][0]
    assert comment == f"release-migrations restored {taken['manifest']['path']} sha256 {taken['sha256']}"

    again = run_module("pg_restore", {"url": target, "src": taken["path"]})
    assert again.rc == 0, again.output
    assert again.result["changed"] is False
    assert again.result["row_counts"] == EXPECTED_COUNTS


@pytest.mark.db
def test_restore_over_non_empty_database_without_confirm_is_refused(seeded_db, workdir):
    taken = backup(seeded_db, workdir)
    sql(seeded_db, "INSERT INTO users (email) VALUES ('new@example.com')")

    run = run_module("pg_restore", {"url": seeded_db, "src": taken["path"]})

    assert run.rc != 0
    assert "already has 3 user table(s)" in run.result["msg"]
    assert "confirm: true" in run.result["msg"]
    assert sql(seeded_db, "SELECT count(*) FROM users") == [(4,)]  # untouched


@pytest.mark.db
def test_clean_and_confirm_drop_and_recreate_the_target(seeded_db, target_db, workdir):
    taken = backup(seeded_db, workdir)
    target = target_db()
    assert run_module("pg_restore", {"url": target, "src": taken["path"]}).rc == 0
    sql(target, "CREATE TABLE stray (id int); DELETE FROM audit.events")

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "clean": True, "confirm": True,
                                    "source_database": parse_url(seeded_db).dbname},
                     real=True)  # this module's run through the real ansible

    assert run.rc == 0, run.output
    assert run.result["changed"] is True and run.result["cleaned"] is True and run.result["created"] is False
    assert run.result["row_counts"] == EXPECTED_COUNTS  # stray gone, events back


@pytest.mark.db
def test_confirm_without_clean_replaces_backup_objects_in_place(seeded_db, workdir):
    taken = backup(seeded_db, workdir, format="directory")
    sql(seeded_db, "DELETE FROM releases; DELETE FROM users WHERE id = 3")

    run = run_module("pg_restore", {"url": seeded_db, "src": taken["path"], "confirm": True})

    assert run.rc == 0, run.output
    assert run.result["cleaned"] is False
    assert run.result["row_counts"] == EXPECTED_COUNTS


@pytest.mark.db
def test_restore_into_existing_empty_database_needs_no_confirm(seeded_db, new_database, workdir):
    taken = backup(seeded_db, workdir, format="plain")
    empty = new_database("rm_empty")

    run = run_module("pg_restore", {"url": empty, "src": taken["path"]})

    assert run.rc == 0, run.output
    assert run.result["created"] is False
    assert run.result["row_counts"] == EXPECTED_COUNTS


@pytest.mark.db
def test_missing_target_with_create_false_is_an_error(seeded_db, target_db, workdir, pg_server):
    taken = backup(seeded_db, workdir)
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "create": False})

    assert run.rc != 0
    assert "does not exist and create is false" in run.result["msg"]
    assert not database_exists(pg_server, target)


@pytest.mark.db
def test_check_mode_plans_from_the_manifest_and_touches_nothing(seeded_db, target_db, workdir, pg_server):
    taken = backup(seeded_db, workdir)
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": str(workdir),
                                    "source_database": parse_url(seeded_db).dbname}, check=True)

    assert run.rc == 0, run.output
    assert run.result["changed"] is True
    assert run.result["src"] == taken["path"]
    assert run.result["manifest"]["alembic_revision"] == REVISION
    assert run.result["created"] is True
    assert not database_exists(pg_server, target)


@pytest.mark.db
def test_src_directory_restores_latest_verified_backup_of_source_database(seeded_db, target_db, workdir):
    backup(seeded_db, workdir, label="first")
    sql(seeded_db, "UPDATE alembic_version SET version_num = 'ffff00001111'")
    newest = backup(seeded_db, workdir, label="second")
    unverified = backup(seeded_db, workdir, label="third")
    manifest_path_for(unverified["path"]).unlink()  # no manifest: never "verified"
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": str(workdir),
                                    "source_database": parse_url(seeded_db).dbname})

    assert run.rc == 0, run.output
    assert run.result["src"] == newest["path"]
    assert run.result["alembic_revision"] == ["ffff00001111"]


@pytest.mark.db
def test_src_directory_without_backups_of_that_database_names_what_it_has(seeded_db, target_db, workdir):
    backup(seeded_db, workdir)

    run = run_module("pg_restore", {"url": target_db(), "src": str(workdir), "source_database": "nope"})

    assert run.rc != 0
    assert "No verified backup of database 'nope'" in run.result["msg"]
    assert parse_url(seeded_db).dbname in run.result["msg"]


@pytest.mark.db
def test_backup_without_manifest_restores_only_with_verify_checksum_false(seeded_db, target_db, workdir):
    taken = backup(seeded_db, workdir)
    manifest_path_for(taken["path"]).unlink()
    target = target_db()

    refused = run_module("pg_restore", {"url": target, "src": taken["path"]})
    assert refused.rc != 0 and "has no manifest" in refused.result["msg"]

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "verify_checksum": False})
    assert run.rc == 0, run.output
    assert run.result["manifest"] is None
    assert run.result["row_counts"] == EXPECTED_COUNTS


@pytest.mark.db
def test_load_settings_reach_the_restore_session(seeded_db, target_db, workdir):
    """PGOPTIONS carries the load settings: a plain dump that echoes them into a table proves they applied."""
    taken = backup(seeded_db, workdir, format="plain", compression="none")
    with open(taken["path"], "a") as handle:  # append after the dump (so restore unchecked)
        handle.write("CREATE TABLE public.seen AS SELECT current_setting('synchronous_commit') AS sc, "
                     "current_setting('application_name') AS app;\n")
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "verify_checksum": False})

    assert run.rc == 0, run.output
    assert sql(target, "SELECT sc, app FROM public.seen") == [("off", "release-migrations")]


# --- the parallel load ------------------------------------------------------------------------------------

BIG_SQL = """
CREATE TABLE big (id bigint PRIMARY KEY, owner_id int REFERENCES users(id), note text, payload jsonb);
CREATE INDEX big_owner ON big (owner_id);
CREATE UNIQUE INDEX big_note ON big (note);
INSERT INTO big SELECT i, 1 + i % 3, 'note ' || i || E'\\twith a tab, a \\\\ backslash and\\na newline',
  jsonb_build_object('i', i, 'text', repeat('x', i % 50)) FROM generate_series(1, 4000) i;
CREATE SEQUENCE counter START 7;
SELECT nextval('counter');
COMMENT ON INDEX big_note IS 'notes are unique';
"""


def client_bin(pg_server) -> str:
    from ansible.module_utils.pg_client_tools import find_client_tools

    return pg_server.bin_dir or find_client_tools(pg_server.major, pg_server.version).bin_dir


@pytest.mark.db
@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_a_table_cut_into_chunks_on_two_sessions_restores_every_row_and_the_same_schema(
        fmt, seeded_db, target_db, workdir, pg_server, monkeypatch):
    from ansible.module_utils import parallel_load
    from support import schema_dump

    sql(seeded_db, BIG_SQL)
    monkeypatch.setattr(parallel_load, "CHUNK_BYTES", 16 << 10)  # ~20 chunks of big's rows
    taken = backup(seeded_db, workdir, format=fmt)
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "jobs": 2})

    assert run.rc == 0, run.output
    load = run.result["load"]
    assert load["method"].startswith("parallel") and load["sessions"] == 2 and load["copy_chunks"] > 10
    assert load["rows_loaded"] == 4000 + sum(EXPECTED_COUNTS.values()) + 1  # + alembic_version's row
    assert run.result["row_counts"] == {**EXPECTED_COUNTS, "big": 4000}
    assert set(run.result["timings"]) == {"check_s", "recreate_s", "load_s", "facts_s"}
    bin_dir = client_bin(pg_server)
    assert schema_dump(target, bin_dir) == schema_dump(seeded_db, bin_dir)
    rows = "SELECT id, owner_id, note, payload FROM big ORDER BY id"
    assert sql(target, rows) == sql(seeded_db, rows)
    assert sql(target, "SELECT last_value FROM counter") == [(7,)]


@pytest.mark.db
def test_a_database_the_restore_did_not_make_is_loaded_in_one_transaction(seeded_db, new_database, workdir):
    taken = backup(seeded_db, workdir)
    empty = new_database("rm_given")

    run = run_module("pg_restore", {"url": empty, "src": taken["path"]})

    assert run.rc == 0, run.output
    assert run.result["created"] is False and run.result["load"]["method"] == "psql, one transaction"
    assert run.result["row_counts"] == EXPECTED_COUNTS


# Valid SQL whose text looks like pg_dump's own structure: ownership statements as data rows and as lines of a
# function body, a table whose name holds a newline, entry headers and a COPY line inside a comment and a body.
LOOKALIKE_SQL = r"""
CREATE TABLE "multi
line" (id int PRIMARY KEY, stmt text);
INSERT INTO "multi
line" VALUES (1, 'ok'), (2, 'GRANT SELECT ON t TO PUBLIC;'), (3, 'ALTER TABLE t OWNER TO nobody;'),
                 (4, 'REVOKE ALL ON t FROM PUBLIC;');
CREATE TABLE t (id int);
CREATE INDEX t_id ON t (id);
COMMENT ON INDEX t_id IS '
--
-- Name: t_id; Type: INDEX; Schema: public; Owner: o
--

SET statement_timeout = 0;';
CREATE FUNCTION lookalike() RETURNS text LANGUAGE sql AS $body$
SELECT '
GRANT SELECT ON t TO PUBLIC;
--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o
--

COPY public.t (id) FROM stdin;
'::text
$body$;
CREATE FUNCTION granted() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
GRANT SELECT ON t TO PUBLIC;
RETURN 1;
END $$;
"""


@pytest.mark.db
@pytest.mark.parametrize(("fmt", "jobs"), [("plain", 2), ("plain", 1), ("custom", 2)])
def test_text_that_looks_like_pg_dumps_own_structure_is_restored_byte_for_byte(
        fmt, jobs, seeded_db, target_db, workdir, pg_server):
    from support import schema_dump

    sql(seeded_db, LOOKALIKE_SQL)
    taken = backup(seeded_db, workdir, format=fmt)
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "jobs": jobs})

    assert run.rc == 0, run.output
    bin_dir = client_bin(pg_server)
    assert schema_dump(target, bin_dir) == schema_dump(seeded_db, bin_dir)  # function bodies, comments included
    rows = 'SELECT id, stmt FROM "multi\nline" ORDER BY id'
    assert sql(target, rows) == sql(seeded_db, rows) and len(sql(target, rows)) == 4


@pytest.mark.db
def test_a_plain_stream_cut_short_commits_nothing(seeded_db, new_database, workdir, pg_server):
    """psql --single-transaction commits a stream that ends early at a line boundary; ours is BEGIN ... COMMIT
    with COMMIT as its last bytes, so a load whose writer died leaves nothing."""
    from pathlib import Path

    from ansible.module_utils.pg_client_tools import find_client_tools
    from ansible.module_utils.restore_runner import _load_plain

    taken = backup(seeded_db, workdir, format="plain", compression="none")
    text = Path(taken["path"]).read_bytes()
    cut = workdir / "cut.sql"
    cut.write_bytes(text[:text.index(b"\n", text.index(b"COPY public.users")) + 1])  # ends inside users' rows
    given = new_database("rm_given")
    info = parse_url(given)
    psql = find_client_tools(pg_server.major, pg_server.version).path("psql")
    with pytest.raises(Exception):  # noqa: B017 - whatever psql says; what matters is what was kept
        _load_plain(cut, psql, info.libpq_env(), True, info.secrets)
    assert sql(given, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


# Tables whose row counts are easy to get wrong: an inheritance parent (its count includes its child's rows), a
# partitioned table (counted through its partitions), a table a materialized view's refresh writes to after the
# data (the load's COPY counts would miss that row); quoted names; keys in their plainest form and not.
FAMILY_SQL = '''
CREATE TABLE parent (id int PRIMARY KEY, note text);
CREATE TABLE child (extra int) INHERITS (parent);
INSERT INTO parent VALUES (1, 'p1'), (2, 'p2');
INSERT INTO child VALUES (3, 'c3', 0), (4, 'c4', 0), (5, 'c5', 0);
CREATE TABLE measure (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measure_2026 PARTITION OF measure FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measure SELECT i, '2026-03-01' FROM generate_series(1, 6) i;
CREATE TABLE "Odd ""Name""" ("a b" int NOT NULL, c int, UNIQUE ("a b", c), PRIMARY KEY ("a b"));
CREATE TABLE covered (id int, v int UNIQUE DEFERRABLE, PRIMARY KEY (id) INCLUDE (v));
INSERT INTO "Odd ""Name""" SELECT i, i FROM generate_series(1, 4) i;
INSERT INTO covered SELECT i, i FROM generate_series(1, 2) i;
CREATE TABLE audit (n int);
INSERT INTO audit VALUES (0);
CREATE FUNCTION note_refresh() RETURNS int LANGUAGE sql VOLATILE
  AS $$ INSERT INTO public.audit VALUES (1) RETURNING 1 $$;
CREATE MATERIALIZED VIEW refreshed AS SELECT note_refresh() AS x;
'''


def count_of(url: str, name: str) -> int:
    """count(*) of a table named as results name it (``users``, ``audit.events``)."""
    schema, _, table = name.rpartition(".") if "." in name else ("public", "", name)
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))
    return sql(url, f"SELECT count(*) FROM {quoted}")[0][0]


@pytest.mark.db
def test_row_counts_are_what_the_tables_hold_after_the_parallel_load(seeded_db, target_db, workdir, pg_server):
    """Row counts are counted in the restored tables, not taken from the load: a refresh after the data adds a
    row, an inheritance parent holds its child's rows; checked by SQL."""
    import gzip
    from pathlib import Path

    from support import schema_dump

    sql(seeded_db, FAMILY_SQL)
    taken = backup(seeded_db, workdir, format="plain")
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "jobs": 2})

    assert run.rc == 0, run.output
    assert run.result["load"]["method"] == "parallel"
    by_sql = {name: count_of(target, name) for name in run.result["row_counts"]}
    assert run.result["row_counts"] == by_sql
    assert by_sql == {**EXPECTED_COUNTS, "parent": 5, "child": 3, "measure": 6, 'Odd "Name"': 4, "covered": 2,
                      "audit": 3}  # 2 copied, 1 written by the refresh
    bin_dir = client_bin(pg_server)
    assert schema_dump(target, bin_dir) == schema_dump(seeded_db, bin_dir)  # keys built as indexes, same schema

    # A dump changed by hand: rows deleted after the data. The counts say what the tables hold.
    edited = Path(workdir) / "edited.sql.gz"
    text = gzip.decompress(Path(taken["path"]).read_bytes())
    edited.write_bytes(gzip.compress(text + b"\nDELETE FROM audit.events;\n"))
    again = target_db()
    run = run_module("pg_restore", {"url": again, "src": str(edited), "jobs": 2, "verify_checksum": False})
    assert run.rc == 0, run.output
    assert run.result["row_counts"]["audit.events"] == count_of(again, "audit.events") == 0


@pytest.mark.db
def test_the_load_sessions_stop_autovacuum_sooner_where_the_role_may_say_so(pg_server, new_database):
    """deadlock_timeout (how long a build waits before autovacuum on its table is told to yield) is lowered for a
    superuser's load sessions; another role's sessions keep the server's value, without an error."""
    import uuid

    import psycopg2
    from ansible.module_utils.restore_runner import LOAD_SESSION_SQL

    url = new_database("rm_dl")
    role = f"rm_plain_{uuid.uuid4().hex[:8]}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER")
    try:
        for who, expected in ((None, "100ms"), (role, sql(url, "SHOW deadlock_timeout")[0][0])):
            conn = psycopg2.connect(url, user=who) if who else psycopg2.connect(url)
            with conn.cursor() as cur:
                cur.execute(LOAD_SESSION_SQL)
                cur.execute("SHOW deadlock_timeout")
                assert cur.fetchone()[0] == expected, who
            conn.close()
    finally:
        pg_server.execute(f"DROP ROLE IF EXISTS {role}")
