"""The binary backup format on a real PostgreSQL: pg_dump for the schema and the rest, big tables' rows by binary
COPY in pg_dump's snapshot; restored by the parallel load, by one transaction into a given database, by hand with
psql and gzip, and table by table. Every check is made by SQL or pg_dump against the source database.

``binary_min_bytes: 0`` puts every table whose types allow it in binary (the tests' tables are small).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from ansible.module_utils.backup_manifest import manifest_path_for
from ansible.module_utils.pg_connection import ConnInfo, parse_url
from support import binary_backup, client_bin, run_module, schema_dump, sql

# Every kind of column the binary form carries, odd values included; and a table whose types keep it text.
MIXED_SQL = r'''
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Odd ""Name""" (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "Weird Col" text, n numeric(12,3), ts timestamptz, d date,
  b bool, raw bytea, u uuid, j jsonb, arr int[], tags text[], m mood, p positive, r int4range, f float8,
  iv interval, js json, gone int, doubled bigint GENERATED ALWAYS AS (id * 2) STORED);
ALTER TABLE "My Schema"."Odd ""Name""" DROP COLUMN gone;
INSERT INTO "My Schema"."Odd ""Name""" ("Weird Col", n, ts, d, b, raw, u, j, arr, tags, m, p, r, f, iv, js)
  SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE E'tab\there, back\\slash, line\nbreak, ünïcødé ' || i END,
         i * 1.125, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', DATE '2000-01-01' + i,
         i % 2 = 0, decode(md5(i::text), 'hex'), md5(i::text)::uuid,
         jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'x', NULL)),
         ARRAY[i, i + 1, NULL], ARRAY['a' || i, NULL, E'q"uote'],
         (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood, 1 + i % 50, int4range(i, i + 10),
         CASE i % 5 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-Infinity'::float8 ELSE i / 3.0 END,
         i * interval '1 second', json_build_object('k', i)
  FROM generate_series(1, 3000) i;
CREATE TABLE opaque (id int PRIMARY KEY, pr pair, moods mood[], cls regclass);
INSERT INTO opaque SELECT i, ROW(i, 't' || i)::pair, ARRAY['ok', 'sad']::mood[], 'opaque'::regclass
  FROM generate_series(1, 20) i;
CREATE TABLE unreadable (id int, iv int2vector, ov oidvector, q tsquery, acl aclitem[]);
INSERT INTO unreadable VALUES (1, '', '', plainto_tsquery('english', 'the'),
  ARRAY[makeaclitem('pg_database_owner'::regrole, 'pg_database_owner'::regrole, 'SELECT', false)]);
CREATE TABLE documents (id int, x xml);
INSERT INTO documents VALUES (1, NULL);  -- the embedded server is built without libxml: no xml values
CREATE TABLE parent (id int, note text);
CREATE TABLE child (extra int) INHERITS (parent);
INSERT INTO parent VALUES (1, 'p1'), (2, 'p2');
INSERT INTO child VALUES (3, 'c3', 30), (4, 'c4', 40);
CREATE TABLE measure (id int, at date NOT NULL, v text) PARTITION BY RANGE (at);
CREATE TABLE measure_2025 PARTITION OF measure FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measure_2026 PARTITION OF measure FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measure SELECT i, DATE '2025-06-01' + i, 'v' || i FROM generate_series(1, 400) i;
CREATE TABLE guarded (id int, owner_name text);
ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
ALTER TABLE guarded FORCE ROW LEVEL SECURITY;
CREATE POLICY nobody ON guarded USING (false);
INSERT INTO guarded VALUES (1, 'hidden by the policy'), (2, 'also hidden');
CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
CREATE TABLE audit (n int);
CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END $$;
CREATE TRIGGER counted AFTER INSERT ON parent FOR EACH ROW EXECUTE FUNCTION count_insert();
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('b1b2b3b4b5b6');
'''
ODD = '"My Schema"."Odd ""Name"""'
TABLES = [ODD, "opaque", "unreadable", "documents", "ONLY parent", "child", "measure_2025", "measure_2026", "guarded",
          "no_columns", "audit", "alembic_version"]
BINARY = [ODD] + [f'"public"."{t}"' for t in ("alembic_version", "audit", "child", "guarded", "measure_2025",
                                                "measure_2026", "no_columns", "parent")]


def content(url: str) -> dict[str, tuple[int, str]]:
    """Every table's rows as (count, md5 of the sorted rows' text), read by SQL (row security off: the owner)."""
    out = {}
    for table in TABLES:
        name = table.removeprefix("ONLY ")
        query = (f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                 f"FROM {table} t")
        out[name] = tuple(sql(url, f"SET row_security = off; {query}")[0]) if name != "no_columns" else \
            sql(url, f"SELECT count(*), '' FROM {table}")[0]
    return out


@pytest.fixture
def mixed_db(new_database):
    url = new_database("rm_bin")
    sql(url, MIXED_SQL)
    return url


@pytest.mark.db
@pytest.mark.parametrize("into", ["new", "given"])
def test_every_column_kind_round_trips_through_binary_rows(into, mixed_db, target_db, new_database, workdir,
                                                         pg_server):
    taken = binary_backup(mixed_db, workdir)
    root = Path(taken["path"])
    assert root.name.endswith(".bin") and taken["format"] == "binary"
    # opaque (OIDs in their binary form), unreadable (empty vectors, an empty tsquery, aclitem: no binary form that
    # reads back) and documents (xml) stay text.
    assert sorted(taken["manifest"]["binary_tables"]) == BINARY
    index = json.loads((root / "rows.json").read_text())
    assert all((root / f).is_file() for t in index["tables"] for f in t["files"])
    assert b"COPY public.opaque " in subprocess.run(["gzip", "-dc", str(root / "data.sql.gz")], capture_output=True,
                                                    check=True).stdout
    target = target_db() if into == "new" else new_database("rm_given")

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "jobs": 2})

    assert run.rc == 0, run.output
    assert run.result["load"]["method"] == ("parallel" if into == "new" else "psql, one transaction")
    assert content(target) == content(mixed_db)
    assert sql(target, "SELECT count(*) FROM audit") == [(0,)]  # the trigger came after the rows
    bin_dir = client_bin(pg_server)
    assert schema_dump(target, bin_dir) == schema_dump(mixed_db, bin_dir)
    for name, count in run.result["row_counts"].items():
        schema, _, table = name.rpartition(".")
        quoted = ".".join('"' + p.replace('"', '""') + '"' for p in (schema or "public", table))
        assert sql(target, f"SET row_security = off; SELECT count(*) FROM {quoted}")[0][0] == count, name
    # The identity continues from the backup's value.
    sql(target, f"INSERT INTO {ODD} (\"Weird Col\") VALUES ('next')")
    assert sql(target, f"SELECT max(id) FROM {ODD}") == [(3001,)]

    again = run_module("pg_restore", {"url": target, "src": taken["path"], "jobs": 2})
    assert again.rc == 0 and again.result["changed"] is False


@pytest.mark.db
def test_a_big_table_in_many_pieces_loads_on_two_sessions(mixed_db, target_db, workdir, pg_server):
    from ansible.module_utils.backup_runner import BackupRequest, run_backup

    taken = run_backup(BackupRequest(url=mixed_db, dest=str(workdir), format="binary", binary_min_bytes=0,
                                     binary_piece_bytes=8192 * 4))
    index = json.loads((Path(taken["path"]) / "rows.json").read_text())
    odd = next(t for t in index["tables"] if t["table"] == ODD)
    pages = sql(mixed_db, "SELECT pg_relation_size(%s::regclass) / 8192", (ODD,))[0][0]
    assert len(odd["files"]) == -(-pages // 4) > 5  # one file per 4 pages
    target = target_db()

    run = run_module("pg_restore", {"url": target, "src": taken["path"], "jobs": 2})

    assert run.rc == 0, run.output
    assert run.result["load"]["copy_chunks"] >= len(odd["files"])
    assert content(target) == content(mixed_db)


@pytest.mark.db
def test_the_backup_restores_by_hand_with_psql_and_gzip(mixed_db, new_database, workdir, pg_server):
    """The documented last resort: no module, no Python; the rows files through psql's \\copy."""
    taken = binary_backup(mixed_db, workdir)
    target = new_database("rm_hand")
    from ansible.module_utils.pg_client_tools import find_client_tools

    psql = Path(find_client_tools(pg_server.major, pg_server.version).bin_dir) / "psql"  # the one pg_backup chose
    command = ("{ gunzip -c schema.sql.gz; cat rows.psql; gunzip -c data.sql.gz; } | "
               f"'{psql}' -X -q -v ON_ERROR_STOP=1 --single-transaction")
    done = subprocess.run(["sh", "-c", command], cwd=taken["path"], env=ConnInfo.parse(target).libpq_env(),
                          capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert content(target) == content(mixed_db)


@pytest.mark.db
def test_check_mode_writes_nothing_and_names_the_directory(mixed_db, workdir):
    dest = workdir / "b"
    run = run_module("pg_backup", {"url": mixed_db, "dest": str(dest), "format": "binary"}, check=True)

    assert run.rc == 0 and run.result["changed"] is True and run.result["path"].endswith(".bin")
    assert not dest.exists()


@pytest.mark.db
def test_a_plain_compression_other_than_gzip_is_refused_before_dumping(mixed_db, workdir):
    run = run_module("pg_backup", {"url": mixed_db, "dest": str(workdir / "b"), "format": "binary",
                                   "compression": "none"})

    assert run.rc != 0 and "gzip only" in run.result["msg"] and "compression gzip:N" in run.result["hint"]
    assert not (workdir / "b").exists()


@pytest.mark.db
def test_verify_read_decodes_every_file_and_the_manifest_says_so(mixed_db, workdir):
    taken = binary_backup(mixed_db, workdir, verify_read=True)
    manifest = json.loads(manifest_path_for(taken["path"]).read_text())

    assert "full decode of every file" in manifest["verify_method"]
    assert sorted(manifest["files"]) == sorted(
        p.relative_to(taken["path"]).as_posix() for p in Path(taken["path"]).rglob("*") if p.is_file())
    assert parse_url(mixed_db).dbname == manifest["database"]


@pytest.mark.db
def test_a_latin1_database_keeps_non_ascii_names_in_text_and_its_data_round_trips(pg_server, target_db, workdir):
    name = f"rm_latin1_{os.getpid()}"
    pg_server.execute(f'DROP DATABASE IF EXISTS "{name}"')
    pg_server.execute(f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        source = pg_server.url(name)
        sql(source, 'CREATE TABLE "tëst" ("çol" text); INSERT INTO "tëst" VALUES (\'ÿes\'), (\'çà\');'
                    "CREATE TABLE plain_name (note text); INSERT INTO plain_name VALUES ('déjà vu'), ('naïve');")
        taken = binary_backup(source, workdir)
        target = target_db()

        run = run_module("pg_restore", {"url": target, "src": taken["path"]})

        assert run.rc == 0, run.output
        assert taken["manifest"]["binary_tables"] == ['"public"."plain_name"']  # "tëst" stays text
        for table in ('"tëst"', "plain_name"):
            query = f"SELECT * FROM {table} ORDER BY 1"
            assert sql(target, query) == sql(source, query), table
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
