"""The database side of a migration run: the revision Alembic reads, the advisory lock, session settings.

Our own session (psycopg2) holds the advisory lock and reads the version table. The project's env.py
opens its own connections, as under its own ``alembic`` command; ``session_settings`` makes every
connection opened during the run (any SQLAlchemy engine, sync or async, and libpq through PGOPTIONS)
start with the run's ``lock_timeout`` and ``statement_timeout``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zlib
from contextlib import contextmanager

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo

LOCK_NOT_AVAILABLE = "55P03"
LOCK_TIMEOUT_TEXT = "canceling statement due to lock timeout"
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(us|ms|s|min|h|d)?$")


def current_revisions(conn_info: ConnInfo, version_table: str) -> tuple[str, ...]:
    """The revision(s) in the version table (empty at base), read on our own session (pg_catalog's reader,
    the same one backups and inspections use)."""
    from ansible.module_utils.db_errors import explained
    from ansible.module_utils.pg_catalog import read_revisions

    conn = conn_info.connect()
    try:
        with explained("Reading the version table"), conn.cursor() as cur:
            return tuple(read_revisions(cur, version_table))
    finally:
        conn.close()


def checked_settings(lock_timeout: str | None, statement_timeout: str | None) -> dict[str, str]:
    """The session settings of a run, each a PostgreSQL duration (refused before anything connects)."""
    settings = {}
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if value in (None, ""):
            continue
        text = str(value).strip()
        if not _DURATION.match(text):
            raise OperatorError(f"{name} '{value}' is not a PostgreSQL duration.",
                                f"Use a duration such as 200ms, 5s or 15min for {name}.")
        settings[name] = text
    return settings


@contextmanager
def session_settings(settings: dict[str, str]):
    """Every connection opened while inside starts with ``settings`` (set at session level)."""
    if not settings:
        yield
        return
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    statements = [f"SELECT set_config('{name}', '{value}', false)" for name, value in settings.items()]

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()  # a session setting made inside a transaction lasts only if it commits

    saved = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = " ".join(([saved] if saved else []) + [f"-c {k}={v.replace(' ', '')}"
                                                                     for k, v in settings.items()])
    event.listen(Pool, "connect", on_connect)
    try:
        yield
    finally:
        event.remove(Pool, "connect", on_connect)
        if saved is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = saved


def is_lock_timeout(exc: BaseException | None) -> bool:
    """Whether an exception (or one it was raised from) is PostgreSQL's lock_timeout, whatever the driver."""
    seen = 0
    while exc is not None and seen < 10:
        orig = getattr(exc, "orig", None)
        for candidate in (exc, orig):
            code = getattr(candidate, "pgcode", None) or getattr(candidate, "sqlstate", None)
            if code == LOCK_NOT_AVAILABLE or LOCK_TIMEOUT_TEXT in str(candidate):
                return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def advisory_lock_key(version_table: str) -> int:
    """A stable 63-bit key: one migration at a time per database and version table."""
    return zlib.crc32(f"release-migrations:alembic:{version_table}".encode()) | (0x5EED << 32)


@contextmanager
def advisory_lock(conn_info: ConnInfo, version_table: str, wait_s: float):
    """Hold a session advisory lock on its own connection for the whole run."""
    key = advisory_lock_key(version_table)
    conn = conn_info.connect()
    try:
        deadline = time.monotonic() + max(wait_s, 0)
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    holder = _lock_holder(cur, key)
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise OperatorError(
                        f"Another migration is running on database '{conn_info.dbname}'{waited}"
                        f" ({holder}). Nothing was changed.",
                        "Wait for it to finish and run again, or set advisory_lock_wait (seconds) to queue behind it.",
                        lock_holder=holder,
                    )
                time.sleep(0.25)
        yield key
    finally:
        # A lost connection has released the lock already; never let the unlock hide the real error.
        with contextlib.suppress(Exception), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        with contextlib.suppress(Exception):
            conn.close()


def _lock_holder(cur, key: int) -> str:
    cur.execute(
        """SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database
                  WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
            LIMIT 1""",
        (key,),
    )
    row = cur.fetchone()
    if not row:
        return "the holder has just finished"
    pid, user, app, addr, since = row
    return (
        f"held by pid {pid}, user {user}, application '{app}', from {addr or 'local socket'}, "
        f"since {since:%H:%M:%S %Z}"
    )


@contextmanager
def nolock():
    yield None
