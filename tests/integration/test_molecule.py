"""Run every molecule scenario for real (default delegated driver, localhost, a real PostgreSQL).

Each scenario's own verify playbook holds the assertions; here we check molecule's exit status and
that the sequence we rely on ran (idempotence where the scenario has it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

pytestmark = [pytest.mark.molecule, pytest.mark.db]

SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_the_molecule_scenarios_are_there():
    # The failure, rollback and drill scenarios are pytest tests now (tests/integration/test_lifecycle_playbooks.py):
    # they only drove ansible-playbook. These two keep molecule's own steps (converge, idempotence, verify).
    assert set(SCENARIOS) == {"default", "kubernetes"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario: str, pg_server):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own ansible.cfg from .config/molecule
    if not pg_server.embedded:
        env["PG_TEST_DSN"] = pg_server.admin_url
    molecule = str(Path(sys.executable).parent / "molecule")
    # Forget state an earlier, interrupted run may have left ("instances already prepared").
    subprocess.run([molecule, "reset", "-s", scenario], cwd=ROOT, env=env, capture_output=True, timeout=120)
    proc = subprocess.run(
        [molecule, "test", "-s", scenario],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"molecule test -s {scenario} failed:\n{output[-6000:]}"
    sequence = (ROOT / "molecule" / scenario / "molecule.yml").read_text()
    steps = [s for s in ("prepare", "converge", "idempotence", "verify") if f"- {s}" in sequence]
    for step in steps:  # every step we rely on really ran (not "Skipping")
        assert f"{scenario} ➜ {step}: Executed: Successful" in output, f"{step} did not run:\n{output[-4000:]}"
