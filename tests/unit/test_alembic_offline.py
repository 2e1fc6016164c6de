"""Each pending revision's own offline SQL, its downgrade's kind and the sha256 an approval pins."""

from __future__ import annotations

import hashlib

import pytest
from ansible.module_utils.alembic_offline import (
    approval_listing,
    differing,
    downgrade_kind,
    render_plan,
    sql_file_name,
)
from ansible.module_utils.alembic_plan import Project, build_config, plan_for, resolve_target, script_directory
from ansible.module_utils.pg_connection import ConnInfo
from chain_copies import GOOD_REVISION, HEAD, chain_copy
from support import ROOT

PLACEHOLDER = ConnInfo.parse("postgresql://lint@localhost/lint")  # offline: nothing connects


def plan_of(ini, start=(), target="heads"):
    project = Project(str(ini))
    script = script_directory(build_config(project, PLACEHOLDER))
    return project, plan_for(script, tuple(start), resolve_target(script, target, tuple(start))), script


@pytest.mark.parametrize(("body", "kind"), [
    ("def downgrade():\n    op.drop_table('t')\n", "ok"),
    ("def downgrade():\n    pass\n", "empty"),
    ("def downgrade():\n    '''Nothing to undo.'''\n", "empty"),
    ("def downgrade() -> None:\n    ...\n", "empty"),
    ("def downgrade():\n    '''No way back.'''\n    raise NotImplementedError('irreversible')\n", "raises"),
    ("def upgrade():\n    pass\n", "missing"),
    ("def downgrade(:\n", "unknown"),
])
def test_the_kind_of_a_downgrade_is_read_from_the_revision_file(tmp_path, body, kind):
    path = tmp_path / "rev.py"
    path.write_text("from alembic import op\n\n\n" + body)
    assert downgrade_kind(str(path)) == kind


def test_each_revision_gets_exactly_its_own_sql_and_the_plan_hash_is_its_sha256sums():
    project, plan, script = plan_of(ROOT / "alembic.ini")
    rendered = render_plan(project, PLACEHOLDER, plan, script, twice=True)
    revisions = rendered["revisions"]
    assert [r["revision"] for r in revisions] == plan.pending
    assert "".join(r["sql"] for r in revisions) == rendered["sql"]
    for entry in revisions:
        assert f"-> {entry['revision']}" in entry["sql"] and entry["pinned_to"] == "sql"
        assert entry["approval_sha256"] == hashlib.sha256(entry["sql"].encode()).hexdigest()
        assert entry["path"].startswith("alembic/versions/") and entry["downgrade"] == "ok"
    assert "CREATE TABLE users" in revisions[0]["sql"] and "CREATE TABLE users" not in revisions[1]["sql"]
    assert rendered["sha256sums"] == approval_listing(revisions)
    assert rendered["sql_sha256"] == hashlib.sha256(rendered["sha256sums"].encode()).hexdigest()
    assert rendered["sha256sums"].splitlines()[0] == f"{revisions[0]['approval_sha256']}  1a0c3e5f7b21.sql"


def test_the_same_files_always_give_the_same_hash_and_an_edit_changes_only_its_revision(tmp_path):
    ini = chain_copy(tmp_path, GOOD_REVISION)
    project, plan, script = plan_of(ini, start=(HEAD,))
    first = render_plan(project, PLACEHOLDER, plan, script)
    again = render_plan(project, PLACEHOLDER, plan, script)
    assert first["revisions"][0]["pinned_to"] == "sql" and "nickname" in first["revisions"][0]["sql"]
    assert again["sql_sha256"] == first["sql_sha256"]
    revision_file = tmp_path / "alembic" / "versions" / "f00d00000001_test.py"
    revision_file.write_text(revision_file.read_text().replace('sa.String(50)', 'sa.String(80)'))
    project, plan, script = plan_of(ini, start=(HEAD,))
    edited = render_plan(project, PLACEHOLDER, plan, script)
    assert edited["sql_sha256"] != first["sql_sha256"]
    approved = {e["revision"]: e["approval_sha256"] for e in first["revisions"]}
    assert [d["revision"] for d in differing(edited["revisions"], approved)] == ["f00d00000001"]
    assert differing(again["revisions"], approved) == []


RANDOM_REVISION = GOOD_REVISION.replace(
    'op.add_column("users", sa.Column("nickname", sa.String(50)))',
    'import uuid\n    op.execute("COMMENT ON TABLE users IS \'%s\'" % uuid.uuid4())')
READS_DATABASE = GOOD_REVISION.replace(
    'op.add_column("users", sa.Column("nickname", sa.String(50)))',
    'op.get_bind().execute(sa.text("SELECT 1")).scalar()')


def test_sql_that_differs_between_two_renders_is_pinned_to_its_file(tmp_path):
    ini = chain_copy(tmp_path, RANDOM_REVISION)
    project, plan, script = plan_of(ini, start=(HEAD,))
    rendered = render_plan(project, PLACEHOLDER, plan, script, twice=True)
    [entry] = rendered["revisions"]
    assert entry["pinned_to"].startswith("file:") and "differs between two renders" in entry["pinned_to"]
    assert entry["approval_sha256"] == entry["file_sha256"]
    again = render_plan(project, PLACEHOLDER, plan, script)  # a different SQL, the same file
    assert differing(again["revisions"], {entry["revision"]: entry["approval_sha256"]}) == []


def test_a_plan_that_cannot_render_offline_is_pinned_to_its_files(tmp_path):
    ini = chain_copy(tmp_path, READS_DATABASE)
    project, plan, script = plan_of(ini, start=(HEAD,))
    rendered = render_plan(project, PLACEHOLDER, plan, script)
    assert rendered["sql_error"].startswith("Offline SQL could not be rendered")
    [entry] = rendered["revisions"]
    assert entry["sql"] is None and entry["approval_sha256"] == entry["file_sha256"] is not None
    assert "could not be rendered offline" in entry["pinned_to"]


@pytest.mark.parametrize(("revision", "name"), [
    ("9c2b3f1a4e5d", "9c2b3f1a4e5d.sql"), ("../etc/passwd", "_etc_passwd.sql"), ("0001 init", "0001_init.sql")])
def test_a_revision_id_becomes_a_safe_file_name(revision, name):
    assert sql_file_name(revision) == name
