"""Catalog facts several modules read: the Alembic revision(s), the user's tables, exact row counts.

One reader each, so a backup's manifest, a restore's result and an inspection agree: the version
table is found on the session's ``search_path`` (or named ``schema.table``), and "user tables" are
the tables outside the system schemas that no extension owns, without the version table.
"""

from __future__ import annotations

from ansible.module_utils.operator_error import OperatorError

# User objects only: pg_* schemas (catalog, toast, temp) and information_schema are the system's.
USER_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
NOT_FROM_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass AND d.objid = {oid} "
    "AND d.deptype = 'e')"
)
LOCK_TIMEOUT_S = 30


def qualified(schema: str, name: str) -> str:
    """How objects are named in results: ``users`` in public, ``audit.events`` elsewhere."""
    return name if schema == "public" else f"{schema}.{name}"


def version_table_oid(cur, version_table: str) -> int | None:
    """The version table's oid under the session's own search_path, or None when it does not exist."""
    schema, _, table = version_table.rpartition(".")
    if schema:
        cur.execute("SELECT to_regclass(quote_ident(%s) || '.' || quote_ident(%s))::oid", (schema, table))
    else:
        cur.execute("SELECT to_regclass(quote_ident(%s))::oid", (table,))
    return cur.fetchone()[0]


def read_revisions(cur, version_table: str = "alembic_version", oid: int | None = None) -> list[str]:
    """The revisions recorded in the version table, sorted; [] when the table is absent."""
    from psycopg2 import sql

    oid = version_table_oid(cur, version_table) if oid is None else oid
    if oid is None:
        return []
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = %s", (oid,))
    schema, table = cur.fetchone()
    cur.execute(sql.SQL("SELECT version_num FROM {}.{} ORDER BY version_num").format(
        sql.Identifier(schema), sql.Identifier(table)))
    return [str(row[0]) for row in cur.fetchall()]


def user_tables(cur, version_oid: int | None, *, partitions: bool = False) -> list[tuple[int, str, str]]:
    """(oid, schema, name) of the user's tables, without extension-owned ones and the version table.

    Partitions are left out unless asked for (their rows are counted through their parent)."""
    cur.execute(
        "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND {'' if partitions else 'NOT c.relispartition AND '}{USER_SCHEMA} "
        "AND c.oid IS DISTINCT FROM %s::oid AND "
        + NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")
        + " ORDER BY n.nspname, c.relname",
        (version_oid,),
    )
    return [(int(oid), schema, name) for oid, schema, name in cur.fetchall()]


def count_rows(cur, tables: list[tuple[int, str, str]]) -> dict[str, int | None]:
    """Exact ``count(*)`` per table (None where the role may not read the table)."""
    from psycopg2 import errors, sql

    counts: dict[str, int | None] = {}
    for oid, schema, name in tables:
        cur.execute("SELECT has_table_privilege(%s::oid, 'SELECT')", (oid,))
        if not cur.fetchone()[0]:
            counts[qualified(schema, name)] = None
            continue
        try:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        except errors.LockNotAvailable:
            raise OperatorError(
                f"Counting rows of {qualified(schema, name)} waited more than {LOCK_TIMEOUT_S}s for a lock.",
                "A migration or a long transaction holds an exclusive lock on it; see pg_stat_activity "
                "(pg_inspect with monitoring: true and row_counts: false lists the lock waits), or retry later.",
            ) from None
        counts[qualified(schema, name)] = int(cur.fetchone()[0])
    return counts


def table_facts(conn, version_table: str, *, counts: bool) -> dict:
    """Revision(s), number of user tables and (optionally) their exact row counts, in one snapshot."""
    with conn.cursor() as cur:
        cur.execute("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            cur.execute("SET LOCAL lock_timeout = %s", (f"{LOCK_TIMEOUT_S}s",))
            oid = version_table_oid(cur, version_table)
            tables = user_tables(cur, oid)
            return {"alembic_revision": read_revisions(cur, version_table, oid), "tables": len(tables),
                    "row_counts": count_rows(cur, tables) if counts else {}}
        finally:
            cur.execute("ROLLBACK")


def server_identity(conn) -> dict:
    """Which server and which database this is: PostgreSQL's system identifier (null where the role may not
    read it) and the database's oid (a restore with clean makes a new database, with a new oid)."""
    with conn.cursor() as cur:
        cur.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        oid = cur.fetchone()[0]
        try:
            cur.execute("SELECT system_identifier::text FROM pg_control_system()")
            system_identifier = cur.fetchone()[0]
        except Exception:  # noqa: BLE001 - a managed service may hide it; the host then stands in
            conn.rollback()
            system_identifier = None
    return {"system_identifier": system_identifier, "database_oid": int(oid)}
