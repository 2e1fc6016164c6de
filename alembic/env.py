"""Alembic environment for release_manager.

Where the database comes from, in order: a connection handed over by the caller in
``config.attributes["connection"]`` (the alembic_migrate module does this, so it can hold an
advisory lock and set lock_timeout on the very session that migrates), ``sqlalchemy.url`` from the
ini or ``-x url=``, then the ``DATABASE_URL`` environment variable.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, pool

from alembic import context
from release_manager.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("DATABASE_URL", "")
    if not url:
        raise RuntimeError("No database URL: set DATABASE_URL or sqlalchemy.url in alembic.ini.")
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        # One transaction per revision: a failure leaves the database at the last good revision,
        # and long chains do not hold locks taken by early revisions until the end.
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
        # alembic_migrate's version_table option reaches the env through the ini's main section.
        version_table=config.get_main_option("version_table") or "alembic_version",
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None and not isinstance(connection, Engine):
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = connection if connection is not None else create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
