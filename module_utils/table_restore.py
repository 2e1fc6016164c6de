"""Restore just some tables from a backup, keeping every other table's writes: a side schema, then one swap.

The way back from a revision that cannot be downgraded. The backup's checksum is checked first. The tables
(their DDL, data, indexes, constraints and the sequences they own, from the backup) are loaded into a new side
schema while the app keeps running. Then one short transaction under ``lock_timeout`` (retried) moves the live
tables, and the tables the plan created, into a new ``rm_replaced_<id>`` schema, moves the restored ones in,
and sets the version table to the starting revision. Nothing is dropped: the replaced tables stay for the
operator to inspect. Refused before anything changes when a table outside the set references one inside it
by foreign key, or a view depends on one (after the swap they would point at the replaced table).
"""

from __future__ import annotations

import io
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.dump_objects import SideSchema, entries, parsed
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo, ParsedOnce


@dataclass
class TableRestoreRequest(ParsedOnce):
    url: str
    src: str
    tables: list[str]  # "table" (public) or "schema.table": restored from the backup
    created: list[str] = field(default_factory=list)  # tables the plan created: moved aside
    version_table: str = "alembic_version"
    revision: list[str] = field(default_factory=list)  # where the version table goes ([]: base)
    forget_checksums: list[str] = field(default_factory=list)  # revisions no longer applied
    lock_timeout: str = "2s"
    swap_retries: int = 5
    run_id: str = "x"
    pg_bin_dir: str | None = None
    conn: ConnInfo | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.wanted = {_split(t) for t in self.tables}
        self.moved = {_split(t) for t in self.created} - self.wanted
        safe = "".join(c for c in self.run_id.lower() if c.isalnum())[:20] or "x"
        self.side, self.trash = f"rm_restore_{safe}", f"rm_replaced_{safe}"


def _split(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def _ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


# --- what would go wrong ----------------------------------------------------------------------------


def refusals(cur, req: TableRestoreRequest) -> list[str]:
    """Why the swap would break something, as sentences; [] when it can go ahead."""
    cur.execute("SELECT nspname FROM pg_namespace WHERE nspname IN (%s, %s)", (req.side, req.trash))
    out = [f"schema {row[0]} already exists" for row in cur.fetchall()]
    members = sorted(req.wanted | req.moved)
    cur.execute(
        "SELECT c.conname, src.relnamespace::regnamespace::text, src.relname, dst.relname FROM pg_constraint c "
        "JOIN pg_class src ON src.oid = c.conrelid JOIN pg_class dst ON dst.oid = c.confrelid "
        "WHERE c.contype = 'f' AND (dst.relnamespace::regnamespace::text, dst.relname) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([s for s, _ in members], [t for _, t in members]))
    for name, schema, table, target in cur.fetchall():
        if (schema, table) not in req.wanted | req.moved:
            out.append(f"foreign key {name} of {schema}.{table} references {target} (written since the backup, it "
                       "would point at the replaced table)")
    cur.execute(
        "SELECT DISTINCT v.relnamespace::regnamespace::text || '.' || v.relname, t.relname FROM pg_depend d "
        "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
        "JOIN pg_class t ON t.oid = d.refobjid WHERE d.classid = 'pg_rewrite'::regclass AND v.oid <> t.oid "
        "AND (t.relnamespace::regnamespace::text, t.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([s for s, _ in members], [t for _, t in members]))
    out += [f"view {view} depends on {table}" for view, table in cur.fetchall()]
    cur.execute("SELECT relnamespace::regnamespace::text, relname FROM pg_class WHERE relkind = 'p' OR relispartition")
    out += [f"{s}.{t} is partitioned" for s, t in cur.fetchall() if (s, t) in req.wanted]
    return out


# --- loading the side schema ----------------------------------------------------------------------------


class _Rows(io.RawIOBase):
    """A COPY's rows as a file psycopg2's copy_expert can read."""

    def __init__(self, rows) -> None:
        self.rows, self.buf = iter(rows), b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while len(self.buf) < len(target):
            line = next(self.rows, None)
            if line is None:
                break
            self.buf += line
        n = min(len(target), len(self.buf))
        target[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


def _dump_stream(req: TableRestoreRequest, fmt: str):
    """The backup as plain SQL lines (the file itself, or pg_restore's script of the other formats), and the
    pg_restore process to wait for (None for plain)."""
    if fmt == "plain":
        from ansible.module_utils.fast_gzip import open_read

        return (open_read(Path(req.src)) if req.src.endswith(".gz") else open(req.src, "rb")), None  # noqa: SIM115
    bin_dir = req.pg_bin_dir or _client_for(req.src)
    proc = subprocess.Popen([str(Path(bin_dir) / "pg_restore"), "-f", "-", req.src], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc.stdout, proc


def _client_for(src: str) -> str:
    """A pg_restore at least as new as the pg_dump that wrote the backup (its manifest says which)."""
    from ansible.module_utils.backup_manifest import read_manifest
    from ansible.module_utils.pg_client_tools import candidate_bin_dirs, client_version, select_client

    written_by = str(read_manifest(src).get("client_version") or "0")
    minimum = int(written_by.split(".")[0]) if written_by.split(".")[0].isdigit() else 0
    found = select_client([(d, client_version(d, "pg_restore")) for d in candidate_bin_dirs("pg_restore")], minimum)
    if found is None:
        raise OperatorError(f"No pg_restore {minimum} or newer is installed here (the backup was written by "
                            f"pg_dump {written_by}).", "Install the PostgreSQL client or set pg_bin_dir.")
    return found[0]


def _finished(stream, proc) -> None:
    stream.close()
    if proc is None:
        return
    stderr = proc.stderr.read().decode("utf-8", "replace").strip()
    if proc.wait() != 0:
        raise OperatorError(f"pg_restore could not read {proc.args[-1]}: {stderr[:400]}",
                            "Check the backup (its checksum passed: the client may be older than the dump).")


def load_side(conn, req: TableRestoreRequest, fmt: str) -> dict[str, int]:
    """Load the wanted tables from the backup into the side schema; {table: rows loaded}."""
    side = SideSchema(req.wanted, req.side)
    loaded: dict[str, int] = {}
    held: dict[tuple[str, str], list[Any]] = {}
    stream, proc = _dump_stream(req, fmt)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {_ident(req.side)}")

            def on_data(entry, rows) -> None:
                statements = parsed(entry.sql)
                if side.takes(entry, statements):
                    cur.copy_expert(side.rewrite(statements[0]), _Rows(rows))
                    loaded[entry.name] = cur.rowcount

            for entry in entries(stream, on_data):
                _apply_entry(cur, entry, side, held)
    finally:
        _finished(stream, proc)
    return loaded


def _apply_entry(cur, entry, side: SideSchema, held: dict[tuple[str, str], list[Any]]) -> None:
    if entry.kind == "PREAMBLE":
        for statement in parsed(entry.sql):
            cur.execute(side.rewrite(statement))
        return
    if entry.kind == "TABLE DATA":
        return
    statements = parsed(entry.sql)
    if entry.kind == "SEQUENCE" and not side.takes(entry, statements):
        held[(entry.schema, entry.name)] = statements  # its OWNED BY, later, may make it wanted
        return
    if not side.takes(entry, statements):
        return
    for key in [k for k in held if k in side.sequences]:
        for statement in held.pop(key):
            cur.execute(side.rewrite(statement))
    for statement in statements:
        cur.execute(side.rewrite(statement))


# --- the swap -------------------------------------------------------------------------------------


def _swap_statements(cur, req: TableRestoreRequest) -> list[str]:
    cur.execute("SELECT relnamespace::regnamespace::text, relname FROM pg_class WHERE relkind IN ('r', 'p')")
    live = set(cur.fetchall())
    out = [f"CREATE SCHEMA {_ident(req.trash)}"]
    out += [f"ALTER TABLE {_ident(s, t)} SET SCHEMA {_ident(req.trash)}" for s, t in sorted(req.wanted | req.moved)
            if (s, t) in live]
    out += [f"ALTER TABLE {_ident(req.side, t)} SET SCHEMA {_ident(s)}" for s, t in sorted(req.wanted)
            if (req.side, t) in live]
    out.append(f"DROP SCHEMA {_ident(req.side)}")
    return out


def _set_revision(cur, req: TableRestoreRequest) -> None:
    from ansible.module_utils.pg_catalog import version_table_oid
    from ansible.module_utils.revision_checksums import read_recorded, write_recorded

    oid = version_table_oid(cur, req.version_table)
    if oid is None:
        return
    cur.execute("SELECT %s::oid::regclass::text", (oid,))
    table = cur.fetchone()[0]
    cur.execute(f"DELETE FROM {table}")
    for revision in req.revision:
        cur.execute(f"INSERT INTO {table} (version_num) VALUES (%s)", (revision,))  # noqa: S608 - regclass text
    own, recorded = read_recorded(cur, req.version_table) or ("", {})
    kept = {rev: sha for rev, sha in recorded.items() if rev not in req.forget_checksums}
    if kept != recorded:
        write_recorded(cur, req.version_table, own, kept)


def swap(conn, req: TableRestoreRequest) -> dict[str, Any]:
    """The one short transaction (see the module docstring), retried when it waits longer than lock_timeout."""
    from ansible.module_utils.alembic_session import is_lock_timeout

    for attempt in range(1, req.swap_retries + 2):
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SET LOCAL lock_timeout = %s", (req.lock_timeout,))
                for statement in _swap_statements(cur, req):
                    cur.execute(statement)
                _set_revision(cur, req)
                cur.execute("COMMIT")
            return {"swap_s": round(time.monotonic() - started, 3), "swap_attempts": attempt}
        except Exception as exc:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
            if not is_lock_timeout(exc) or attempt > req.swap_retries:
                raise
            time.sleep(min(0.5 * attempt, 3))
    raise AssertionError("unreachable")


# --- the whole restore ----------------------------------------------------------------------------


def _checked_backup(req: TableRestoreRequest) -> str:
    from ansible.module_utils.backup_manifest import format_of, read_manifest, verify_checksum

    fmt = format_of(req.src)
    if fmt is None or not Path(req.src).exists():
        raise OperatorError(f"{req.src} is not a backup pg_backup wrote.", "Pass the pre-migration backup's path.")
    verify_checksum(req.src, read_manifest(req.src))
    return fmt


def restore_tables(req: TableRestoreRequest, *, check: bool = False) -> dict[str, Any]:
    """Restore ``req.tables`` in place from the backup (see the module docstring); refusals change nothing."""
    started = time.monotonic()
    fmt = _checked_backup(req)
    conn = req.conn.connect()
    try:
        with conn.cursor() as cur:
            refused = refusals(cur, req)
        if refused:
            raise OperatorError(f"The tables cannot be restored on their own: {'; '.join(refused)}. Nothing was "
                                "changed.", "Restore the whole backup instead (pg_restore, or allow "
                                "rm_allow_restore_from_backup), or fix forward.", refusals=refused)
        result: dict[str, Any] = {"tables": sorted(t for _, t in req.wanted), "moved_aside": sorted(
            t for _, t in req.moved), "replaced_schema": req.trash, "revision": req.revision, "format": fmt}
        if check:
            return {**result, "changed": False, "planned": True, "duration_s": round(time.monotonic() - started, 3)}
        loaded = _load(req, fmt)
        result.update(swap(conn, req), rows=loaded, changed=True, planned=False)
    finally:
        conn.close()
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _load(req: TableRestoreRequest, fmt: str) -> dict[str, int]:
    """The side schema loaded on a connection of its own (the dump's session settings stay there)."""
    loader = req.conn.connect()
    try:
        loaded = load_side(loader, req, fmt)
    except Exception as exc:
        _drop_side(req)
        if isinstance(exc, OperatorError):
            raise
        text = (getattr(exc, "pgerror", None) or str(exc)).strip()
        raise OperatorError(f"Loading the tables from the backup failed: {text}. Nothing was changed (the side "
                            f"schema {req.side} was dropped).", "Restore the whole backup instead.") from None
    finally:
        loader.close()
    missing = sorted(t for _, t in req.wanted if t not in loaded)
    if missing:
        _drop_side(req)
        raise OperatorError(f"The backup holds no data for {', '.join(missing)}. Nothing was changed.",
                            "Check the table names; a table the plan created is moved aside, not restored.")
    return loaded


def _drop_side(req: TableRestoreRequest) -> None:
    conn = req.conn.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {_ident(req.side)} CASCADE")
    finally:
        conn.close()
