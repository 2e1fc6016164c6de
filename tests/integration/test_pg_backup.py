"""pg_backup on a real PostgreSQL, through the real `ansible` ad-hoc command: what is written, the
manifest, max_age reuse, check mode, retention, refusals before dumping, and the module docs."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from ansible.module_utils.backup_manifest import hash_directory, manifest_path_for, parse_backup_name
from ansible.module_utils.pg_connection import parse_url
from support import ROOT, run_module, sql

REVISION = "1a2b3c4d5e6f"
SEED_SQL = f"""
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE releases (id serial PRIMARY KEY, user_id int REFERENCES users(id));
INSERT INTO users (email) VALUES ('ada@example.com'), ('bob@example.com');
INSERT INTO releases (user_id) VALUES (1);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('{REVISION}');
"""
MANIFEST_FIELDS = {
    "format_version", "database", "host", "server_version", "client_version", "alembic_revision",
    "alembic_revisions", "label", "format", "compression", "jobs", "path", "size_bytes", "sha256", "started_at",
    "finished_at", "duration_s", "dump_duration_s", "verified", "verify_method", "table_count",
}
RESULT_FIELDS = {
    "changed", "path", "manifest_path", "manifest", "size_bytes", "sha256", "duration_s", "format", "compression",
    "database", "alembic_revision", "server_version", "client_version", "removed", "reused", "msg",
}


@pytest.fixture
def seeded_db(new_database):
    url = new_database("rm_bk")
    sql(url, SEED_SQL)
    return url


def names(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


@pytest.mark.db
def test_custom_backup_writes_file_and_complete_manifest(seeded_db, workdir, pg_server):
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir / "b"), "label": "pre_release",
                                   "format": "custom"}, real=True)  # this module's run through the real ansible

    assert run.rc == 0, run.output
    result = run.result
    assert set(result) >= RESULT_FIELDS
    path = Path(result["path"])
    database = parse_url(seeded_db).dbname
    parsed = parse_backup_name(path.name)
    assert parsed["database"] == database and parsed["label"] == "pre_release" and parsed["ext"] == "dump"
    assert names(workdir / "b") == [path.name, path.name + ".manifest.json"]  # no .partial left
    manifest = json.loads(manifest_path_for(path).read_text())
    assert set(manifest) >= MANIFEST_FIELDS
    assert manifest == result["manifest"]
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == result["sha256"]
    assert manifest["size_bytes"] == path.stat().st_size == result["size_bytes"]
    assert manifest["alembic_revision"] == REVISION and manifest["alembic_revisions"] == [REVISION]
    assert manifest["server_version"] == pg_server.version
    assert int(manifest["client_version"].split(".")[0]) >= pg_server.major
    assert manifest["verified"] is True and "pg_restore --list" in manifest["verify_method"]
    assert manifest["table_count"] == 2 and manifest["compression"] == "gzip:1" and manifest["format"] == "custom"
    assert manifest["path"] == path.name and manifest["label"] == "pre_release"
    assert result["changed"] is True and result["reused"] is False and result["removed"] == []
    assert result["msg"].startswith(f"Backed up {database} (") and str(path) in result["msg"]


@pytest.mark.db
def test_directory_backup_records_per_file_hashes(seeded_db, workdir):
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "format": "directory", "jobs": 3})

    assert run.rc == 0, run.output
    path = Path(run.result["path"])
    assert path.is_dir() and path.name.endswith(".dir") and (path / "toc.dat").is_file()
    overall, files = hash_directory(path)
    manifest = run.result["manifest"]
    assert manifest["files"] == files and manifest["sha256"] == overall and manifest["jobs"] == 3
    # gzip is ours (ISA-L), not pg_dump's: data files are .dat.gz, the TOC is left as pg_dump wrote it.
    assert any(name.endswith(".dat.gz") for name in files) and not any(name.endswith(".dat") and name != "toc.dat"
                                                                        for name in files)
    assert "ISA-L" in manifest["compressed_by"]


@pytest.mark.db
def test_default_backup_is_binary_a_directory_of_gzipped_files_hashed_one_by_one(seeded_db, workdir):
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir)})

    assert run.rc == 0, run.output
    path = Path(run.result["path"])
    manifest = run.result["manifest"]
    assert run.result["format"] == "binary" and path.is_dir() and path.name.endswith(".bin")
    on_disk = {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in path.rglob("*") if p.is_file()}
    assert manifest["files"] == on_disk and {"schema.sql.gz", "data.sql.gz", "rows.json", "rows.psql"} <= set(on_disk)
    assert manifest["binary_tables"] == []  # small tables stay text (binary_min_bytes: 8 MiB)
    assert "CREATE TABLE public.users" in gzip.decompress((path / "schema.sql.gz").read_bytes()).decode()
    data = gzip.decompress((path / "data.sql.gz").read_bytes()).decode()
    assert "COPY public.users " in data and "-- PostgreSQL database dump complete" in data[-400:]
    assert "ISA-L" in manifest["compressed_by"] and manifest["verify_method"].startswith("completion markers")


@pytest.mark.db
def test_plain_backup_is_sql_gzipped_while_streaming_and_decoded_to_verify(seeded_db, workdir):
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "format": "plain"})

    assert run.rc == 0, run.output
    path = Path(run.result["path"])
    manifest = run.result["manifest"]
    assert run.result["format"] == "plain" and path.name.endswith(".sql.gz")
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "ISA-L" in manifest["compressed_by"] and manifest["verify_method"] == "completion marker on the stream"
    assert "-- PostgreSQL database dump complete" in gzip.decompress(path.read_bytes()).decode()[-400:]
    deep = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir / "deep"), "verify_read": True,
                                    "format": "plain"})
    assert deep.rc == 0 and deep.result["manifest"]["verify_method"].endswith("+ full decode of the file")


@pytest.mark.db
def test_plain_backup_is_gzip_sql_ending_with_completion_marker(seeded_db, workdir):
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "format": "plain", "compression": 9})

    assert run.rc == 0, run.output
    path = Path(run.result["path"])
    assert path.name.endswith(".sql.gz") and run.result["compression"] == "gzip:9"
    text = gzip.decompress(path.read_bytes()).decode()
    assert "CREATE TABLE public.users" in text
    assert "-- PostgreSQL database dump complete" in text[-400:]


@pytest.mark.db
def test_database_without_version_table_records_no_revision(new_database, workdir):
    url = new_database("rm_norev")
    sql(url, "CREATE TABLE t (id int)")

    run = run_module("pg_backup", {"url": url, "dest": str(workdir)})

    assert run.rc == 0, run.output
    assert run.result["alembic_revision"] is None and run.result["manifest"]["alembic_revisions"] == []


@pytest.mark.db
def test_max_age_reuses_a_recent_verified_backup(seeded_db, workdir):
    first = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir)})
    assert first.rc == 0, first.output

    again = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "max_age": 3600})

    assert again.rc == 0, again.output
    assert again.result["reused"] is True and again.result["changed"] is False
    assert again.result["path"] == first.result["path"]
    assert again.result["sha256"] == first.result["sha256"]
    assert len(names(workdir)) == 2


@pytest.mark.db
def test_max_age_takes_a_new_backup_when_the_revision_moved_since(seeded_db, workdir):
    first = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir)})
    assert first.rc == 0, first.output
    conn = psycopg2.connect(seeded_db)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE alembic_version SET version_num = 'abcdef000001'")
    conn.close()

    again = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "max_age": 3600})

    assert again.rc == 0, again.output
    assert again.result["reused"] is False and again.result["path"] != first.result["path"]
    assert again.result["alembic_revision"] == "abcdef000001"


@pytest.mark.db
def test_max_age_takes_a_new_backup_when_the_last_one_is_unverified(seeded_db, workdir):
    first = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "verify": False})
    assert first.rc == 0 and first.result["manifest"]["verified"] is False

    again = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "max_age": 3600})

    assert again.rc == 0, again.output
    assert again.result["reused"] is False and again.result["changed"] is True
    assert again.result["path"] != first.result["path"]


@pytest.mark.db
def test_check_mode_reports_path_and_writes_nothing(seeded_db, workdir):
    dest = workdir / "not-yet"

    run = run_module("pg_backup", {"url": seeded_db, "dest": str(dest), "format": "plain"}, check=True)

    assert run.rc == 0, run.output
    assert run.result["changed"] is True
    assert run.result["path"].startswith(str(dest) + "/") and run.result["path"].endswith(".sql.gz")
    assert run.result["alembic_revision"] == REVISION
    assert not dest.exists()


@pytest.mark.db
def test_retention_keeps_newest_and_removes_older_of_same_database(seeded_db, new_database, workdir):
    other = new_database("rm_other")
    other_run = run_module("pg_backup", {"url": other, "dest": str(workdir)})
    runs = [run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "keep": 2}) for _ in range(3)]
    assert all(r.rc == 0 for r in runs), [r.output for r in runs]

    oldest, middle, newest = (Path(r.result["path"]) for r in runs)
    assert runs[2].result["removed"] == [str(manifest_path_for(oldest)), str(oldest)]
    assert not oldest.exists() and not manifest_path_for(oldest).exists()
    assert middle.exists() and newest.exists() and manifest_path_for(newest).exists()
    assert Path(other_run.result["path"]).exists()  # another database's backup is never touched


@pytest.mark.db
def test_unsupported_compression_is_refused_before_anything_is_written(seeded_db, workdir, pg_server):
    if not pg_server.embedded:
        pytest.skip("the embedded pgserver build is the one known to lack lz4")
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir / "b"), "compression": "lz4",
                                   "format": "custom"})
    if run.rc == 0:
        pytest.skip("this pgserver build supports lz4")

    assert "built without lz4 support" in run.result["msg"]
    assert "gzip" in run.result["hint"]
    assert not (workdir / "b").exists()


@pytest.mark.db
def test_tar_with_compression_is_refused_and_tar_default_is_uncompressed(seeded_db, workdir):
    refused = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "format": "tar",
                                       "compression": "gzip:1"})
    assert refused.rc != 0 and "tar format cannot be compressed" in refused.result["msg"]
    assert names(workdir) == []

    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir), "format": "tar"})
    assert run.rc == 0, run.output
    assert run.result["compression"] == "none" and run.result["path"].endswith(".tar")


@pytest.mark.db
def test_bad_label_is_refused_without_writing(seeded_db, workdir):
    run = run_module("pg_backup", {"url": seeded_db, "dest": str(workdir / "b"), "label": "../escape"})
    assert run.rc != 0 and "cannot be part of a file name" in run.result["msg"]
    assert not (workdir / "b").exists()


@pytest.mark.parametrize("module", ["pg_backup", "pg_restore"])
def test_ansible_doc_renders(module):
    doc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-doc"), "-M", "library", module],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert doc.returncode == 0, doc.stderr
    assert f"MODULE {module}" in doc.stdout.replace("\x1b[1m", "").replace("\x1b[0m", "")
    for word in ("EXAMPLES", "RETURN VALUES", "url", "check_mode"):
        assert word in doc.stdout
    assert "WARNING" not in doc.stderr.upper()
