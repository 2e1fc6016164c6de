"""Catalog naming (module_utils/pg_catalog.py)."""

from ansible.module_utils.pg_catalog import qualified


def test_qualified_names_public_objects_without_schema():
    assert qualified("public", "users") == "users"
    assert qualified("audit", "events") == "audit.events"
