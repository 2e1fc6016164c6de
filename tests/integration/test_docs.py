"""The README's promises stay tied to tests: every fault test has its line in the fault table."""

from __future__ import annotations

import re

from support import ROOT


def test_every_fault_test_has_a_line_in_the_readme_fault_table():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\| `(test_[a-z0-9_]+)` \|", section))
    tests = {name for path in (ROOT / "tests" / "faults").glob("test_*.py")
             for name in re.findall(r"^def (test_[a-z0-9_]+)", path.read_text(), re.M)}
    assert tests - listed == set(), "fault tests missing from the README table"
    assert listed - tests == set(), "README table names tests that do not exist"


def test_the_readme_rule_table_lists_every_lint_rule_with_its_source_and_severity():
    from ansible.module_utils.lint_rules import RULES

    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (squawk \| [a-z]+|release-migrations \| [a-z]+)", readme, re.M))
    assert set(rows) == set(RULES)
    for name, (source, severity, *_) in RULES.items():
        assert rows[name] == f"{source} | {severity}", name
