"""Fixtures of the fault tests: databases of the release_manager chain at a given revision, with rows."""

from __future__ import annotations

import pytest
from support import ROOT


@pytest.fixture
def chain_db(new_database):
    """Factory: a new database migrated (in-process, by alembic_migrate's runner) to ``revision``, with
    ``users`` sample rows from scripts/seed_demo_data.py. Returns its URL."""
    from ansible.module_utils.alembic_runner import MigrationRequest, run
    from seed_demo_data import seed

    def make(revision: str = "head", users: int = 20, prefix: str = "flt") -> str:
        url = new_database(prefix)
        run(MigrationRequest(url=url, config=str(ROOT / "alembic.ini"), revision=revision))
        if users:
            seed(url, users)
        return url

    return make
