"""Create and drop a database named by a connection (scratch databases for verify and drills)."""

from __future__ import annotations

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import NAMEDATALEN, ConnInfo


def database_exists(conn_info: ConnInfo, maintenance_db: str = "postgres") -> bool:
    conn = conn_info.with_database(maintenance_db).connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (conn_info.dbname,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def ensure_database(conn_info: ConnInfo, present: bool, *, maintenance_db: str = "postgres",
                    check: bool = False, fresh: bool = False, protect: tuple[str, ...] = ()) -> bool:
    """Make the connection's database exist (or not). Returns whether anything changed (or would).

    ``fresh``: the database must not exist yet (a scratch database is never one that was there before).
    ``protect``: names never dropped (the live database, whatever a scratch-name variable says).
    """
    from psycopg2 import errors, sql

    name = conn_info.dbname
    if not present and name in protect:
        raise OperatorError(f"Refusing to drop database '{name}': it is protected (the run's own database).",
                            "A scratch database name must never be the live database's; fix the variable that "
                            "names it.")
    if name == maintenance_db:
        raise OperatorError(
            f"Refusing to create or drop the maintenance database '{name}'.",
            "Name a scratch database in the URL.",
        )
    if len(name.encode()) > NAMEDATALEN:
        # PostgreSQL would silently cut the name to 63 bytes: the database created or dropped would
        # not be the one named (and could be another, existing one).
        raise OperatorError(
            f"Database name '{name[:70]}...' is longer than PostgreSQL's {NAMEDATALEN} bytes; it would be cut "
            "to another name.",
            "Use a shorter name (scratch names: module_utils/pg_connection.scratch_name).",
        )
    exists = database_exists(conn_info, maintenance_db)
    if present and fresh and exists:
        raise OperatorError(
            f"Database '{name}' already exists, and a scratch database must be new. Nothing was changed.",
            "Drop it if it is a leftover of an earlier run, or choose another scratch name.",
        )
    if exists == present:
        return False
    if check:
        return True
    conn = conn_info.with_database(maintenance_db).connect()
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
