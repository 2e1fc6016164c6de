"""Checksums of applied revisions kept with the database (the version table's comment), on a real PostgreSQL:
recorded by a run, backfilled for databases migrated before, compared in check mode, invisible to the app's
autogenerate, kept by pg_backup -> pg_restore, and never able to fail a migration."""

from __future__ import annotations

import pytest
from ansible.module_utils.revision_checksums import MARKER, parse_comment
from chain_copies import GOOD_REVISION, HEAD, chain_copy
from support import ROOT, revision_of, run_module, sql

pytestmark = pytest.mark.db
CHAIN = ["1a0c3e5f7b21", "2b1d4f6a8c32", "3c2e5a7b9d43", "4d3f6b8c0e54", "5e4a7c9d1f65", "8f1a2b3c4d5e", HEAD]


def recorded(url: str) -> tuple[str, dict[str, str]]:
    [(comment,)] = sql(url, "SELECT obj_description('alembic_version'::regclass, 'pg_class')")
    return parse_comment(comment)


def migrate(url: str, ini=ROOT / "alembic.ini", check: bool = False, **args):
    run = run_module("alembic_migrate", {"url": url, "config": str(ini), **args}, check=check)
    assert run.rc == 0, run.output
    return run.result


def test_a_run_records_the_sha256_of_each_revision_file_it_applied(new_database):
    import hashlib

    url = new_database("ck")
    result = migrate(url)
    assert sorted(result["checksums"]["recorded"]) == sorted(CHAIN) and result["checksums"]["written"] is True
    _, found = recorded(url)
    chain_file = next((ROOT / "alembic" / "versions").glob(f"{HEAD}_*.py"))
    assert found[HEAD] == hashlib.sha256(chain_file.read_bytes()).hexdigest() and len(found) == len(CHAIN)
    check = migrate(url, check=True)
    assert check["checksums"] == {"matching": len(CHAIN), "missing": [], "edited": []}
    assert migrate(url)["changed"] is False  # nothing pending, nothing to record: idempotent


def test_the_apps_autogenerate_never_sees_the_checksums(new_database):
    url = new_database("ck")
    migrate(url)
    models = migrate(url, check=True, compare_models=True)["models"]
    assert models["checked"] is True and models["diffs"] == []


def test_an_applied_revision_edited_later_is_named_in_check_mode(new_database, tmp_path):
    url = new_database("ck")
    ini = chain_copy(tmp_path, GOOD_REVISION)
    migrate(url, ini)
    path = tmp_path / "alembic" / "versions" / "f00d00000001_test.py"
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(60)"))
    check = migrate(url, ini, check=True)
    [edited] = check["checksums"]["edited"]
    assert edited["revision"] == "f00d00000001" and edited["path"] == "alembic/versions/f00d00000001_test.py"
    assert edited["recorded"] != edited["actual"]
    again = migrate(url, ini)  # a run does not paper over the edit ...
    assert again["changed"] is False and recorded(url)[1]["f00d00000001"] == edited["recorded"]
    accepted = migrate(url, ini, accept_edited=["f00d00000001"])  # ... unless it was accepted after review
    assert accepted["checksums"]["accepted"] == ["f00d00000001"] and accepted["changed"] is True
    assert recorded(url)[1]["f00d00000001"] == edited["actual"]
    assert migrate(url, ini, check=True)["checksums"]["edited"] == []


def test_a_database_migrated_before_checksums_gets_them_at_the_next_run(new_database):
    url = new_database("ck")
    migrate(url, record_checksums=False)
    sql(url, "COMMENT ON TABLE alembic_version IS 'Owned by the release team.'")
    assert migrate(url, check=True)["checksums"]["missing"] == sorted(CHAIN)
    backfill = migrate(url)
    assert backfill["changed"] is True and backfill["checksums"]["backfilled"] == sorted(CHAIN)
    own, found = recorded(url)
    assert own == "Owned by the release team." and sorted(found) == sorted(CHAIN)
    assert migrate(url)["changed"] is False


def test_a_downgrade_forgets_the_revisions_it_removed(new_database):
    url = new_database("ck")
    migrate(url)
    down = migrate(url, revision="-2", allow_downgrade=True)
    assert sorted(down["checksums"]["removed"]) == sorted(CHAIN[-2:])
    assert sorted(recorded(url)[1]) == sorted(CHAIN[:-2])


def test_the_checksums_survive_a_backup_and_a_restore(new_database, target_db, workdir):
    url = new_database("ck")
    migrate(url)
    taken = run_module("pg_backup", {"url": url, "dest": str(workdir / "backups")})
    assert taken.rc == 0, taken.output
    target = target_db()
    restored = run_module("pg_restore", {"url": target, "src": taken.result["path"]})
    assert restored.rc == 0, restored.output
    assert recorded(target) == recorded(url)
    assert migrate(target, check=True)["checksums"] == {"matching": len(CHAIN), "missing": [], "edited": []}


def test_checksums_that_cannot_be_written_never_fail_the_migration(new_database, pg_server, tmp_path):
    """Fault: the server refuses every COMMENT (an event trigger); the revision still applies, the result
    says why no checksum was written."""
    url = new_database("ck")
    migrate(url)
    sql(url, "CREATE FUNCTION no_comments() RETURNS event_trigger LANGUAGE plpgsql AS "
             "$$ BEGIN RAISE EXCEPTION 'comments are not allowed here'; END $$")
    sql(url, "CREATE EVENT TRIGGER no_comments ON ddl_command_start WHEN TAG IN ('COMMENT') "
             "EXECUTE FUNCTION no_comments()")
    result = migrate(url, chain_copy(tmp_path, GOOD_REVISION))
    assert result["applied"] == ["f00d00000001"] and revision_of(url) == ["f00d00000001"]
    assert result["checksums"]["written"] is False and "comments are not allowed here" in result["checksums"]["reason"]
    assert MARKER in sql(url, "SELECT obj_description('alembic_version'::regclass, 'pg_class')")[0][0]
