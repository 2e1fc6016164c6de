"""bin/lint-migrations on the runbook's dangerous examples and their safe versions, and what PostgreSQL does
with them: the dangerous ones are blocked (those PostgreSQL refuses do fail), the safe ones pass and run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ansible.module_utils.lint_cli import main
from chain_copies import HEAD, chain_copy
from runbook_revisions import DANGEROUS, REFUSED_BY_POSTGRESQL, SAFE
from support import ROOT, revision_of

CLI = ROOT / "bin" / "lint-migrations"


def lint(capsys, ini, *extra) -> tuple[int, dict]:
    status = main(["--config", str(ini), "--from", HEAD, "--format", "json", "--pg-version", "15", *extra])
    out = capsys.readouterr().out
    return status, json.loads(out) if out.strip().startswith("{") else {}


@pytest.mark.parametrize("case", sorted(DANGEROUS))
def test_the_runbooks_dangerous_examples_are_blocked_naming_the_revision(case, tmp_path, capsys):
    rule, text = DANGEROUS[case]
    status, result = lint(capsys, chain_copy(tmp_path, text))
    assert status == 1
    assert rule in [f["rule"] for f in result["blocking"]]
    assert {f["revision"] for f in result["blocking"]} == {"f00d00000001"}
    assert all(f["path"] == "alembic/versions/f00d00000001_test.py" for f in result["blocking"])


@pytest.mark.parametrize("case", sorted(SAFE))
def test_their_safe_versions_pass_without_a_blocking_finding(case, tmp_path, capsys):
    status, result = lint(capsys, chain_copy(tmp_path, SAFE[case]))
    assert status == 0, [(f["rule"], f["statement"]) for f in result["blocking"]]
    assert result["counts"]["error"] == 0 and result["pending"] == ["f00d00000001"]


def test_the_whole_chain_from_base_and_the_text_report(tmp_path, capsys):
    status = main(["--config", str(ROOT / "alembic.ini")])
    out = capsys.readouterr().out
    assert status == 0 and out.rstrip().splitlines()[-1].startswith("Nothing blocks:")


def test_an_exception_and_a_severity_change_are_the_operators_to_make(tmp_path, capsys):
    ini = chain_copy(tmp_path, DANGEROUS["index-without-concurrently"][1])
    status, result = lint(capsys, ini, "--accept", "f00d00000001:require-concurrent-index-creation")
    assert status == 0 and result["accepted"][0]["rule"] == "require-concurrent-index-creation"
    status, result = lint(capsys, ini, "--severity", "require-concurrent-index-creation=warn")
    assert status == 0 and result["counts"]["warn"] >= 1


def test_the_command_runs_without_ansible_installed_and_exits_1_when_a_finding_blocks(tmp_path):
    ini = chain_copy(tmp_path, DANGEROUS["update-limit-commit-in-do-block"][1])
    no_ansible = ("import runpy, sys; sys.modules['ansible'] = None; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", no_ansible, str(CLI), "--config", str(ini), "--from", HEAD],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "f00d00000001 (alembic/versions/f00d00000001_test.py)" in proc.stdout
    assert "BLOCKS: [update-limit]" in proc.stdout and "BLOCKS: [commit-in-do-block]" in proc.stdout


def test_a_lint_that_cannot_run_says_why_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, str(CLI), "--config", str(tmp_path / "missing.ini")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = subprocess.run([sys.executable, str(CLI), "--config", str(ROOT / "alembic.ini"), "--severity", "oops"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not KEY=VALUE" in proc.stderr


def _apply(url: str, ini) -> None:
    from ansible.module_utils.alembic_runner import MigrationRequest, run

    run(MigrationRequest(url=url, config=str(ini), lock_timeout="5s"))


@pytest.mark.db
@pytest.mark.parametrize("case", sorted(SAFE))
def test_the_safe_versions_run_on_postgresql_with_rows(case, chain_db, tmp_path):
    url = chain_db(users=3)
    _apply(url, chain_copy(tmp_path, SAFE[case]))
    assert revision_of(url) == ["f00d00000001"]


@pytest.mark.db
@pytest.mark.parametrize("case", sorted(REFUSED_BY_POSTGRESQL))
def test_what_the_lint_calls_refused_postgresql_does_refuse(case, chain_db, tmp_path):
    from ansible.module_utils.operator_error import OperatorError

    url = chain_db(users=3)
    with pytest.raises(OperatorError, match="Revision f00d00000001 failed"):
        _apply(url, chain_copy(tmp_path, DANGEROUS[case][1]))
    assert revision_of(url) == [HEAD]
