"""The product code keeps the shape the project promises: small functions, one concern per module_utils file
(its first line says which), and modules whose DOCUMENTATION matches their argument spec."""

from __future__ import annotations

import ast
import importlib.util
import sys

import pytest
import yaml
from support import ROOT

PRODUCT = ["library", "module_utils", "plugins", "scripts"]
MAX_FUNCTION_LINES = 60


def python_files():
    return sorted(p for d in PRODUCT for p in (ROOT / d).rglob("*.py"))


def test_no_function_in_the_product_code_is_longer_than_60_lines():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_every_module_utils_file_states_its_one_concern_on_its_first_line():
    for path in sorted((ROOT / "module_utils").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.name} has no docstring"
        first = doc.splitlines()[0]
        assert len(first) > 20 and first[0].isupper(), f"{path.name}: {first!r}"


def module_docs_and_spec(name: str) -> tuple[dict, dict]:
    """(the options DOCUMENTATION declares, fragments included; the module's argument spec)."""
    path = ROOT / "library" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_doc_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = dict(doc.get("options") or {})
    fragments = ast.literal_eval(repr(doc.get("extends_documentation_fragment") or []))
    frag_module = importlib.util.spec_from_file_location("_frag", ROOT / "plugins" / "doc_fragments" / "connection.py")
    frag = importlib.util.module_from_spec(frag_module)
    frag_module.loader.exec_module(frag)
    for fragment in fragments:
        attribute = fragment.split(".", 1)[1].upper() if "." in fragment else "DOCUMENTATION"
        options.update(yaml.safe_load(getattr(frag.ModuleDocFragment, attribute))["options"])
    return options, getattr(module, "ARGUMENT_SPEC", None)


@pytest.mark.parametrize("name", ["alembic_migrate", "pg_backup", "pg_restore", "pg_inspect", "pg_database"])
def test_each_modules_documentation_matches_its_argument_spec(name):
    options, argspec = module_docs_and_spec(name)
    assert argspec is not None, f"{name} has no ARGUMENT_SPEC"
    assert set(options) == set(argspec), f"documented {sorted(set(options) ^ set(argspec))} differently"
    for option, spec in argspec.items():
        doc = options[option]
        assert doc.get("type", "str") == spec.get("type", "str"), option
        assert bool(doc.get("required", False)) == bool(spec.get("required", False)), option
        assert doc.get("default") == spec.get("default"), option
        assert doc.get("choices") == spec.get("choices"), option
        assert doc.get("elements") == spec.get("elements"), option
