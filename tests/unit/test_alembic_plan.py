"""Planning over the real release_manager revision graph (module_utils/alembic_plan.py; no database needed)."""

from __future__ import annotations

import pytest
from ansible.module_utils.alembic_plan import Project, build_config, plan_for, resolve_target, script_directory
from ansible.module_utils.operator_error import OperatorError
from support import ROOT

CHAIN = ["1a0c3e5f7b21", "2b1d4f6a8c32", "3c2e5a7b9d43", "4d3f6b8c0e54", "5e4a7c9d1f65", "8f1a2b3c4d5e", "9c2b3f1a4e5d"]


@pytest.fixture(scope="module")
def script():
    return script_directory(build_config(Project(config=str(ROOT / "alembic.ini"))))


def test_from_base_to_head_runs_the_whole_chain_in_order(script):
    plan = plan_for(script, (), resolve_target(script, "head", ()))
    assert plan.direction == "up" and plan.pending == CHAIN


def test_relative_targets(script):
    assert resolve_target(script, "-1", (CHAIN[-1],)) == (CHAIN[-2],)
    assert resolve_target(script, "-7", (CHAIN[-1],)) == ()
    assert resolve_target(script, "+2", (CHAIN[0],)) == (CHAIN[2],)
    assert resolve_target(script, "+1", ()) == (CHAIN[0],)
    with pytest.raises(OperatorError, match="Cannot go down 8"):
        resolve_target(script, "-8", (CHAIN[-1],))


def test_prefix_and_downgrade_plan(script):
    target = resolve_target(script, "3c2e", (CHAIN[-1],))
    plan = plan_for(script, (CHAIN[-1],), target)
    assert plan.direction == "down"
    assert plan.pending == list(reversed(CHAIN[3:]))


def test_at_target_nothing_is_pending(script):
    plan = plan_for(script, (CHAIN[-1],), (CHAIN[-1],))
    assert plan.direction == "none" and plan.pending == []


def test_a_database_revision_unknown_to_the_project_is_explained(script):
    with pytest.raises(OperatorError, match="does not know"):
        plan_for(script, ("abcdef123456",), (CHAIN[-1],))


def test_missing_ini_is_explained():
    with pytest.raises(OperatorError, match="does not exist"):
        build_config(Project(config="/nonexistent/alembic.ini"))


def test_a_blank_revision_means_head(script):
    assert resolve_target(script, "  ", ()) == (CHAIN[-1],)
