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
        assert f" {entry['revision']}" in entry["sql"] and entry["pinned_to"] == "sql and file"
        assert entry["sql_sha256"] == hashlib.sha256(entry["sql"].encode()).hexdigest()
        assert entry["file_sha256"] == hashlib.sha256((ROOT / entry["path"]).read_bytes()).hexdigest()
        assert entry["path"].startswith("alembic/versions/") and entry["downgrade"] == "ok"
    assert "CREATE TABLE users" in revisions[0]["sql"] and "CREATE TABLE users" not in revisions[1]["sql"]
    assert rendered["sha256sums"] == approval_listing(revisions)
    assert rendered["sql_sha256"] == hashlib.sha256(rendered["sha256sums"].encode()).hexdigest()
    # What an approval pins: each revision's SQL and its file (the code that runs online), in sha256sum format.
    assert rendered["sha256sums"].splitlines()[:2] == [f"{revisions[0]['sql_sha256']}  1a0c3e5f7b21.sql",
                                                        f"{revisions[0]['file_sha256']}  1a0c3e5f7b21.py"]


def test_the_same_files_always_give_the_same_hash_and_an_edit_changes_only_its_revision(tmp_path):
    ini = chain_copy(tmp_path, GOOD_REVISION)
    project, plan, script = plan_of(ini, start=(HEAD,))
    first = render_plan(project, PLACEHOLDER, plan, script)
    again = render_plan(project, PLACEHOLDER, plan, script)
    assert first["revisions"][0]["pinned_to"] == "sql and file" and "nickname" in first["revisions"][0]["sql"]
    assert again["sql_sha256"] == first["sql_sha256"]
    revision_file = tmp_path / "alembic" / "versions" / "f00d00000001_test.py"
    revision_file.write_text(revision_file.read_text().replace('sa.String(50)', 'sa.String(80)'))
    project, plan, script = plan_of(ini, start=(HEAD,))
    edited = render_plan(project, PLACEHOLDER, plan, script)
    assert edited["sql_sha256"] != first["sql_sha256"]
    approved = {e["revision"]: e["approval_sha256"] for e in first["revisions"]}
    files = {e["revision"]: e["file_sha256"] for e in first["revisions"]}
    [changed] = differing(edited["revisions"], approved, files)
    assert changed["revision"] == "f00d00000001" and changed["why"] == "its file changed"
    assert differing(again["revisions"], approved) == []


def test_code_that_only_runs_online_is_pinned_too(tmp_path):
    """A revision that renders one statement offline and runs another online: editing the online branch
    leaves the offline SQL as it was, and still changes what the approval pins."""
    online = GOOD_REVISION.replace(
        'op.add_column("users", sa.Column("nickname", sa.String(50)))',
        'if op.get_context().as_sql:\n        op.execute("UPDATE users SET name = name WHERE id = 1")\n'
        '    else:\n        op.get_bind().execute(sa.text("UPDATE users SET name = name WHERE id = 1"))')
    ini = chain_copy(tmp_path, online)
    project, plan, script = plan_of(ini, start=(HEAD,))
    first = render_plan(project, PLACEHOLDER, plan, script)
    path = tmp_path / "alembic" / "versions" / "f00d00000001_test.py"
    path.write_text(path.read_text().replace('sa.text("UPDATE users SET name = name WHERE id = 1")',
                                             'sa.text("UPDATE users SET name = \'pwned\'")'))
    project, plan, script = plan_of(ini, start=(HEAD,))
    edited = render_plan(project, PLACEHOLDER, plan, script)
    assert edited["revisions"][0]["sql"] == first["revisions"][0]["sql"]  # offline, nothing shows it ...
    assert edited["sql_sha256"] != first["sql_sha256"]  # ... and the approval still no longer matches


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
    assert rendered["sha256sums"] == f"{entry['file_sha256']}  f00d00000001.py\n"
    again = render_plan(project, PLACEHOLDER, plan, script, twice=True)  # a different SQL, the same file
    assert differing(again["revisions"], {entry["revision"]: entry["approval_sha256"]}) == []


def test_a_plan_that_cannot_render_offline_is_pinned_to_its_files(tmp_path):
    ini = chain_copy(tmp_path, READS_DATABASE)
    project, plan, script = plan_of(ini, start=(HEAD,))
    rendered = render_plan(project, PLACEHOLDER, plan, script)
    assert rendered["sql_error"].startswith("The offline SQL of f00d00000001 could not be rendered")
    [entry] = rendered["revisions"]
    assert entry["sql"] is None and entry["file_sha256"] is not None
    assert "could not be rendered offline" in entry["pinned_to"]


def test_the_revisions_around_one_that_cannot_render_are_still_rendered(tmp_path):
    ini = chain_copy(tmp_path, GOOD_REVISION, READS_DATABASE.replace('"f00d00000001"', '"f00d00000002"').replace(
        'down_revision = "{down}"', 'down_revision = "f00d00000001"'))
    project, plan, script = plan_of(ini, start=(HEAD,))
    rendered = render_plan(project, PLACEHOLDER, plan, script)
    good, reads = rendered["revisions"]
    assert "ADD COLUMN nickname" in good["sql"] and good["pinned_to"] == "sql and file"
    assert reads["sql"] is None and "could not be rendered offline" in reads["pinned_to"]


@pytest.mark.parametrize(("revision", "name"), [
    ("9c2b3f1a4e5d", "9c2b3f1a4e5d.sql"), ("../etc/passwd", "_etc_passwd.sql"), ("0001 init", "0001_init.sql")])
def test_a_revision_id_becomes_a_safe_file_name(revision, name):
    assert sql_file_name(revision) == name


def test_a_plan_to_several_heads_is_rendered_revision_by_revision(tmp_path):
    other = GOOD_REVISION.replace('"f00d00000001"', '"f00d00000002"').replace("nickname", "motto")
    ini = chain_copy(tmp_path, GOOD_REVISION, other)  # two branches on top of the chain's head
    project, plan, script = plan_of(ini, start=(HEAD,), target="heads")
    assert len(plan.target) == 2
    rendered = render_plan(project, PLACEHOLDER, plan, script, way_back=True)
    assert "sql_error" not in rendered
    by_revision = {e["revision"]: e for e in rendered["revisions"]}
    assert "ADD COLUMN nickname" in by_revision["f00d00000001"]["sql"]
    assert "ADD COLUMN motto" in by_revision["f00d00000002"]["sql"]
    assert all(e["pinned_to"] == "sql and file" for e in rendered["revisions"])
