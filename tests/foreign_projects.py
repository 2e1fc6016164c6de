"""Alembic projects that are not ours, for the tests: two real ones installed from PyPI (requirements-test.txt)
and a small async app written here the way Alembic's own `async` template writes one.

- optuna: 10 revisions with PostgreSQL enum types; the shipped alembic.ini and env.py (which calls
  fileConfig and opens its own engine); its downgrade of v3.0.0.c is broken upstream.
- mlflow (mlflow-skinny): 67 revisions; mlflow creates its first five tables itself before it runs the
  chain (mlflow.store.db.utils._initialize_tables does), so a fresh database gets them the same way.
- async_app: an env.py on an async engine (postgresql+asyncpg://), whose settings come from the app's own
  environment variable, and which imports the app (printing to stdout on import, as some apps do).
"""

from __future__ import annotations

import os
from pathlib import Path

OPTUNA_HEAD = "v3.2.0.a"
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_CONFIGURE_LOGGING": "false",
              "MLFLOW_DISABLE_AGENT_HINT": "1"}


def optuna_ini() -> Path:
    import optuna

    return Path(optuna.__file__).parent / "storages" / "_rdb" / "alembic.ini"


def mlflow_project() -> tuple[Path, Path]:
    """(the shipped alembic.ini, the migrations directory): the ini's script_location is relative to
    site-packages, so the directory is passed as script_location, as a user of the module would."""
    os.environ.update(MLFLOW_ENV)
    import mlflow

    migrations = Path(mlflow.__file__).parent / "store" / "db_migrations"
    return migrations / "alembic.ini", migrations


def mlflow_initial_tables(url: str) -> None:
    """What mlflow does to a fresh database before its Alembic chain (its first revision alters these)."""
    os.environ.update(MLFLOW_ENV)
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


ASYNC_INI = """[alembic]
script_location = migrations
prepend_sys_path = .

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %%(levelname)-5.5s [%%(name)s] %%(message)s
"""

ASYNC_SETTINGS = '''"""The app's settings: from its own environment, as twelve-factor apps do."""
import os

print("async_app: loading settings")  # an import with a side effect on stdout
DATABASE_URL = os.environ["APP_DATABASE_URL"]
'''

ASYNC_MODELS = '''import sqlalchemy as sa

metadata = sa.MetaData()
status = sa.Enum("draft", "live", name="item_status")
items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("status", status, nullable=False, server_default="draft"),
)
'''

ASYNC_ENV = '''import asyncio
from logging.config import fileConfig

from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

from alembic import context

import app_models
import app_settings

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
config.set_main_option("sqlalchemy.url", app_settings.DATABASE_URL)
target_metadata = app_models.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    connectable = async_engine_from_config(config.get_section(config.config_ini_section, {}),
                                           prefix="sqlalchemy.", poolclass=pool.NullPool)
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
'''

ASYNC_REVISIONS = {
    "a1_items.py": '''"""items"""
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("status", sa.Enum("draft", "live", name="item_status"), nullable=False, server_default="draft"),
    )


def downgrade():
    op.drop_table("items")
    sa.Enum(name="item_status").drop(op.get_bind())
''',
    "a2_items_name_index.py": '''"""index items.name"""
from alembic import op

revision = "a2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_items_name", "items", ["name"])


def downgrade():
    op.drop_index("ix_items_name", table_name="items")
''',
}


def async_app(root: Path) -> Path:
    """Write the async app's Alembic project under ``root``; returns its alembic.ini."""
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text(ASYNC_INI)
    (root / "app_settings.py").write_text(ASYNC_SETTINGS)
    (root / "app_models.py").write_text(ASYNC_MODELS)
    (root / "migrations" / "env.py").write_text(ASYNC_ENV)
    (root / "migrations" / "script.py.mako").write_text("")
    for name, text in ASYNC_REVISIONS.items():
        (root / "migrations" / "versions" / name).write_text(text)
    return root / "alembic.ini"
