"""Approval pinned to the exact SQL, in the module: the SQL is rendered again under the migration lock and a
revision file edited since the preview is refused, naming it, before anything runs (the playbook's gate is
tests/faults/test_gates.py)."""

from __future__ import annotations

import pytest
from chain_copies import GOOD_REVISION, HEAD, chain_copy
from support import revision_of, run_module

pytestmark = pytest.mark.db
REVISION_FILE = "alembic/versions/f00d00000001_test.py"


def edit(tmp_path) -> None:
    path = tmp_path / "chain" / REVISION_FILE
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(500)"))


def test_the_sql_is_rendered_again_under_the_lock_and_an_edited_revision_is_refused(chain_db, tmp_path):
    url = chain_db(users=3)
    ini = chain_copy(tmp_path / "chain", GOOD_REVISION)
    preview = run_module("alembic_migrate", {"url": url, "config": str(ini)}, check=True).result
    [entry] = preview["revisions"]
    assert entry["revision"] == "f00d00000001" and "ADD COLUMN nickname VARCHAR(50)" in entry["sql"]
    expected = {entry["revision"]: entry["approval_sha256"]}

    edit(tmp_path)
    refused = run_module("alembic_migrate", {"url": url, "config": str(ini), "expected_sql": expected})
    assert refused.rc != 0
    assert f"f00d00000001 ({REVISION_FILE})" in refused.result["msg"] and "Nothing was changed" in refused.result["msg"]
    assert refused.result["sql_differs"][0]["approved"] == entry["approval_sha256"]
    assert revision_of(url) == [HEAD]

    again = run_module("alembic_migrate", {"url": url, "config": str(ini)}, check=True).result
    applied = run_module("alembic_migrate", {"url": url, "config": str(ini), "expected_sql": {
        e["revision"]: e["approval_sha256"] for e in again["revisions"]}})
    assert applied.rc == 0 and revision_of(url) == ["f00d00000001"]
