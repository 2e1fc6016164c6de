"""Static checks: ruff, ansible-lint (production profile), ansible-doc, syntax-check per inventory."""

import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, ansible_env

BIN = Path(sys.executable).parent
PLAYBOOKS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))
MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, **kw)


def test_python_passes_ruff():
    paths = ["library", "module_utils", "plugins", "scripts", "tests", "bench", "alembic", "release_manager"]
    proc = run([str(BIN / "ruff"), "check", *(p for p in paths if (ROOT / p).exists())])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_playbooks_and_roles_pass_ansible_lint_production_profile():
    proc = run([str(BIN / "ansible-lint"), "--profile", "production", "--offline", "playbooks", "roles"], timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("module", MODULES)
def test_module_documentation_renders_with_ansible_doc(module):
    proc = run([str(BIN / "ansible-doc"), "-M", "library", module])
    assert proc.returncode == 0, proc.stderr
    assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout and module in proc.stdout


@pytest.mark.parametrize("inventory", ["local", "staging", "production"])
def test_every_playbook_passes_syntax_check(inventory):
    for playbook in PLAYBOOKS:
        proc = run([str(BIN / "ansible-playbook"), "--syntax-check", f"playbooks/{playbook}",
                    "-i", f"inventories/{inventory}"])
        assert proc.returncode == 0, f"{playbook} on {inventory}: {proc.stderr}"
