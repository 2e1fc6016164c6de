"""Run every molecule scenario for real (default delegated driver, localhost, a real PostgreSQL).

Each scenario's own verify playbook holds the assertions; here we check molecule's exit status and
that the sequence we rely on ran (idempotence where the scenario has it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

pytestmark = [pytest.mark.molecule, pytest.mark.db]

SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_every_issue_scenario_exists():
    assert {"default", "failure", "rollback", "kubernetes", "drill"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario: str, pg_server):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own ansible.cfg from .config/molecule
    if not pg_server.embedded:
        env["PG_TEST_DSN"] = pg_server.admin_url
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "molecule"), "test", "-s", scenario],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"molecule test -s {scenario} failed:\n{output[-6000:]}"
    assert "converge" in output.lower()
    sequence = (ROOT / "molecule" / scenario / "molecule.yml").read_text()
    if "- idempotence" in sequence:
        assert "Idempotence completed successfully" in output or "idempotence" in output.lower()
