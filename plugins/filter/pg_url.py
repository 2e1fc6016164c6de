"""Jinja filters for PostgreSQL URLs in playbooks, on the same parser the modules use (ConnInfo).

    {{ rm_database_url | pg_database_name }}              -> release_manager
    {{ rm_database_url | pg_with_database('scratch') }}   -> same server and credentials, database 'scratch'
    {{ rm_database_url | pg_mask_url }}                   -> password replaced by ********
    {{ rm_database_url | pg_url_problem }}                -> '' or why the URL is refused
    {{ rm_database_name | pg_path_component }}            -> the name as one safe path component
    {{ rm_database_name | pg_scratch_name('drill', s) }}  -> <name>_drill_<s[:8]>, at most 63 bytes

A URL that cannot be parsed unambiguously fails the task with the parser's message, which never
contains the URL's user-info.
"""

from __future__ import annotations

from pathlib import Path

import ansible.module_utils
from ansible.errors import AnsibleFilterError

# The project's module_utils, importable here as the modules import them (ansible.module_utils.<name>).
_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")  # our module_utils, as the modules import them
ansible.module_utils.__path__.extend([] if _UTILS in ansible.module_utils.__path__ else [_UTILS])

from ansible.module_utils.operator_error import OperatorError  # noqa: E402
from ansible.module_utils.pg_connection import ConnInfo, path_component, scratch_name  # noqa: E402


def _parse(url: str) -> ConnInfo:
    try:
        return ConnInfo.parse(str(url))
    except OperatorError as err:
        raise AnsibleFilterError(str(err)) from None


def pg_url_problem(url: str) -> str:
    """'' for a URL the modules accept; else the parser's message (which never echoes the user-info)."""
    try:
        ConnInfo.parse(str(url))
    except OperatorError as err:
        return str(err)
    return ""


def pg_database_name(url: str) -> str:
    return _parse(url).dbname


def pg_with_database(url: str, dbname: str) -> str:
    return _parse(url).with_database(str(dbname)).url(scheme=_scheme(url))


def pg_mask_url(url: str) -> str:
    return _parse(url).masked


def pg_path_component(name: str) -> str:
    return path_component(str(name))


def pg_scratch_name(database: str, purpose: str, seed: str) -> str:
    return scratch_name(str(database), str(purpose), str(seed))


def _scheme(url: str) -> str:
    info = _parse(url)
    return f"postgresql+{info.driver}" if info.driver else "postgresql"


class FilterModule:
    def filters(self):
        return {
            "pg_database_name": pg_database_name,
            "pg_url_problem": pg_url_problem,
            "pg_with_database": pg_with_database,
            "pg_mask_url": pg_mask_url,
            "pg_path_component": pg_path_component,
            "pg_scratch_name": pg_scratch_name,
        }
