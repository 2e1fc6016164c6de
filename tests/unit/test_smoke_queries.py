"""Smoke query results as JSON (module_utils/smoke_queries.py)."""

from decimal import Decimal

from ansible.module_utils.smoke_queries import json_value


def test_json_value_keeps_json_scalars_and_stringifies_the_rest():
    assert [json_value(v) for v in (None, True, 3, 2.5)] == [None, True, 3, 2.5]
    assert json_value(Decimal("1.50")) == "1.50"
    assert json_value(b"\x01\xff") == "\\x01ff"
    assert json_value(["a"]) == "['a']"
