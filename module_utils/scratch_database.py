"""Create and drop a database named by a URL (scratch databases for verify and drills)."""

from __future__ import annotations

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import connect, parse_url, with_database


def _admin_connection(url: str, maintenance_db: str):
    return connect(with_database(url, maintenance_db))


def database_exists(url: str, maintenance_db: str = "postgres") -> bool:
    conn = _admin_connection(url, maintenance_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parse_url(url).dbname,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def ensure_database(url: str, present: bool, *, maintenance_db: str = "postgres", check: bool = False) -> bool:
    """Make the URL's database exist (or not). Returns whether anything changed (or would)."""
    from psycopg2 import errors, sql

    name = parse_url(url).dbname
    if name == maintenance_db:
        raise OperatorError(
            f"Refusing to create or drop the maintenance database '{name}'.",
            "Name a scratch database in the URL.",
        )
    exists = database_exists(url, maintenance_db)
    if exists == present:
        return False
    if check:
        return True
    conn = _admin_connection(url, maintenance_db)
    try:
        with conn.cursor() as cur:
            if present:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                force = sql.SQL(" WITH (FORCE)") if conn.server_version >= 130000 else sql.SQL("")
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))
    except errors.InsufficientPrivilege as exc:
        raise OperatorError(
            f"Not allowed to {'create' if present else 'drop'} database '{name}': {exc.pgerror.strip()}",
            "Grant the user CREATEDB, or turn off the step that needs a scratch database.",
        ) from None
    finally:
        conn.close()
    return True
