"""The release_manager chain, checked with pytest-alembic's standard tests on a real PostgreSQL.

- single head; every revision upgrades from base to head;
- stairway: every revision goes up, down and up again (``test_up_down_consistency``);
- the head schema equals the SQLAlchemy models (no autogenerate diff).
(pytest-alembic's experimental ``downgrade_leaves_no_trace`` wraps the connection in a way
SQLAlchemy 2.1 rejects; the rollback drill compares schemas before and after a round trip instead.)
"""

from __future__ import annotations

import pytest
import sqlalchemy
from pytest_alembic import tests as alembic_tests
from pytest_alembic.config import Config
from support import ROOT

pytestmark = pytest.mark.db

test_single_head_revision = alembic_tests.test_single_head_revision
test_upgrade = alembic_tests.test_upgrade
test_model_definitions_match_ddl = alembic_tests.test_model_definitions_match_ddl
test_up_down_consistency = alembic_tests.test_up_down_consistency


@pytest.fixture
def alembic_config() -> Config:
    return Config(config_options={"file": str(ROOT / "alembic.ini"), "script_location": str(ROOT / "alembic")})


@pytest.fixture
def alembic_engine(new_database):
    url = new_database("chain")
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg2://" + url.split("://", 1)[1], poolclass=sqlalchemy.pool.NullPool
    )
    yield engine
    engine.dispose()


def test_head_is_the_runbook_revision():
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(AlembicConfig(str(ROOT / "alembic.ini")))
    head = script.get_revision("head")
    assert head.revision == "9c2b3f1a4e5d"
    assert head.down_revision == "8f1a2b3c4d5e"
