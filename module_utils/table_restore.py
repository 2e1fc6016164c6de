"""Restore just some tables from a backup, keeping every other table's writes: a side schema, then one swap.

The way back from a revision that cannot be downgraded. The backup's checksum is checked first. The tables
(their DDL, data, indexes, constraints and the sequences they own, from the backup) are loaded into a new side
schema while the app keeps running. Then one short transaction under ``lock_timeout`` (retried) moves the live
tables, and the tables the plan created, into a new ``rm_replaced_<id>`` schema, moves the restored ones in,
and sets the version table to the starting revision. Nothing is dropped: the replaced tables stay for the
operator to inspect (their foreign keys are dropped in the swap: a kept copy must not hold back, nor be reached
by, the live tables' deletes). Refused before anything changes when a table outside the set references one
inside it by foreign key, or a view depends on one (after the swap they would point at the replaced table).
Names are read as PostgreSQL reads them (``"Tenant A"."Odd""Name"``); nothing the load runs may act on a live
object. A failure after the side schema exists drops it (a retry with the same run id works); a run repeated
after its restore finished recognises it (the replaced schema records what it did) and changes nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.dump_objects import SideSchema, entries, parsed, split_name, table_name
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo, ParsedOnce


@dataclass
class TableRestoreRequest(ParsedOnce):
    url: str
    src: str
    tables: list[str]  # "table" (public) or "schema.table", quoted as quote_ident would: restored
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
    """("public", table) or (schema, table) of a name as PostgreSQL reads it (quotes, "" inside them)."""
    try:
        parts = split_name(name)
    except ValueError as exc:
        raise OperatorError(f"{exc}.", 'Write names as quote_ident does: users, tenant_b.items, "Tenant A".'
                            '"Odd""Name".') from None
    if len(parts) > 2:
        raise OperatorError(f"{name!r} is not a table name (schema.table at most).", "Pass schema.table.")
    return (parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0])


def _names(pairs) -> list[str]:
    return sorted(table_name(s, t) for s, t in pairs)


def _ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


# --- what would go wrong ----------------------------------------------------------------------------


def refusals(cur, req: TableRestoreRequest) -> list[str]:
    """Why the swap would break something, as sentences; [] when it can go ahead. Names compared as the catalog
    holds them (pg_namespace.nspname, pg_class.relname: unquoted)."""
    cur.execute("SELECT nspname FROM pg_namespace WHERE nspname IN (%s, %s)", (req.side, req.trash))
    out = [f"schema {row[0]} already exists" for row in cur.fetchall()]
    members = sorted(req.wanted | req.moved)
    by_name: dict[str, list[tuple[str, str]]] = {}
    for s, t in members:
        by_name.setdefault(t, []).append((s, t))
    out += [f"{', '.join(_names(same))} share one name (the side and replaced schemas hold one table of a name; "
            "restore them in separate runs)" for same in by_name.values() if len(same) > 1]
    wanted = ([s for s, _ in members], [t for _, t in members])
    cur.execute(
        "SELECT c.conname, sn.nspname, src.relname, dn.nspname, dst.relname FROM pg_constraint c "
        "JOIN pg_class src ON src.oid = c.conrelid JOIN pg_namespace sn ON sn.oid = src.relnamespace "
        "JOIN pg_class dst ON dst.oid = c.confrelid JOIN pg_namespace dn ON dn.oid = dst.relnamespace "
        "WHERE c.contype = 'f' AND (dn.nspname, dst.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        wanted)
    for name, schema, table, target_schema, target in cur.fetchall():
        if (schema, table) not in req.wanted | req.moved:
            out.append(f"foreign key {name} of {schema}.{table} references {table_name(target_schema, target)} "
                       "(written since the backup, it would point at the replaced table)")
    cur.execute(
        "SELECT DISTINCT vn.nspname, v.relname, tn.nspname, t.relname FROM pg_depend d "
        "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
        "JOIN pg_namespace vn ON vn.oid = v.relnamespace JOIN pg_class t ON t.oid = d.refobjid "
        "JOIN pg_namespace tn ON tn.oid = t.relnamespace WHERE d.classid = 'pg_rewrite'::regclass "
        "AND v.oid <> t.oid AND (tn.nspname, t.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))", wanted)
    out += [f"view {vs}.{v} depends on {table_name(ts, t)}" for vs, v, ts, t in cur.fetchall()]
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'p' OR c.relispartition")
    out += [f"{table_name(s, t)} is partitioned" for s, t in cur.fetchall() if (s, t) in req.wanted]
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
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {_ident(req.side)}")

        def on_data(entry, rows) -> None:
            statements = parsed(entry.sql)
            if side.takes(entry, statements):
                rv = statements[0].relation
                key = table_name(rv.schemaname or "public", rv.relname)
                cur.copy_expert(side.rewrite(statements[0]), _Rows(rows))
                loaded[key] = cur.rowcount

        if fmt != "binary":
            stream, proc = _dump_stream(req, fmt)
            try:
                for entry in entries(stream, on_data):
                    _apply_entry(cur, entry, side, held)
            finally:
                _finished(stream, proc)
            return loaded
        # A binary backup (binary_rows.py): its schema, the wanted tables' binary rows, then the rest.
        from ansible.module_utils.binary_rows import DATA_FILE, SCHEMA_FILE, read_rows
        from ansible.module_utils.fast_gzip import open_read

        root = Path(req.src)
        for part in (SCHEMA_FILE, None, DATA_FILE):
            if part is None:
                _load_binary_rows(cur, req, read_rows(root), loaded)
                continue
            with open_read(root / part) as stream:
                for entry in entries(stream, on_data):
                    _apply_entry(cur, entry, side, held)
    return loaded


def _load_binary_rows(cur, req: TableRestoreRequest, rows, loaded: dict[str, int]) -> None:
    """The wanted tables' rows files, into the side schema's tables of the same names."""
    from ansible.module_utils.fast_gzip import open_read

    cur.execute(f"SET client_encoding = '{rows.encoding}'")
    for table in rows.tables:
        schema, name = _split(table.name)
        if (schema, name) not in req.wanted:
            continue
        target = f"{_ident(req.side)}.{_ident(name)}{table.column_list}"
        count = 0
        for file in table.files:
            with open_read(rows.root / file) as source:
                cur.copy_expert(f"COPY {target} FROM STDIN (FORMAT binary)", source, size=1 << 20)
            count += max(cur.rowcount, 0)
        loaded[table_name(schema, name)] = count


def _apply_entry(cur, entry, side: SideSchema, held: dict[tuple[str, str], list[Any]]) -> None:
    if entry.kind == "PREAMBLE":
        for statement in parsed(entry.sql):
            cur.execute(side.session(statement))
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
        # A session setting pg_dump writes between entries (SET default_tablespace = '' before the first index of a
        # dump of the sections after the schema) holds for the loading session only, as in the preamble.
        cur.execute(side.session(statement) if type(statement).__name__ == "VariableSetStmt"
                    else side.rewrite(statement))


# --- the swap -------------------------------------------------------------------------------------


_MARK = "pg_restore_tables: "  # the replaced schema's comment: what the restore did, to recognise it once done


def _swap_statements(cur, req: TableRestoreRequest) -> dict[str, Any]:
    """Move the live tables aside and the restored ones in (in the caller's transaction); what it did."""
    cur.execute("SELECT n.nspname, c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p')")
    live = {(s, t): oid for s, t, oid in cur.fetchall()}
    replaced = [(s, t) for s, t in sorted(req.wanted | req.moved) if (s, t) in live]
    restored = [(s, t) for s, t in sorted(req.wanted) if (req.side, t) in live]
    cur.execute(f"CREATE SCHEMA {_ident(req.trash)}")
    for s, t in replaced:
        cur.execute(f"ALTER TABLE {_ident(s, t)} SET SCHEMA {_ident(req.trash)}")
    for s, t in restored:
        cur.execute(f"ALTER TABLE {_ident(req.side, t)} SET SCHEMA {_ident(s)}")
    cur.execute(f"DROP SCHEMA {_ident(req.side)}")
    dropped = _drop_kept_foreign_keys(cur, req)
    marker = {"tables": sorted(req.wanted), "moved": sorted(req.moved), "replaced": replaced,
              "restored": [[s, t, live[(req.side, t)]] for s, t in restored], "revision": sorted(req.revision)}
    cur.execute(f"COMMENT ON SCHEMA {_ident(req.trash)} IS %s", (_MARK + json.dumps(marker),))
    return {"dropped_foreign_keys": dropped}


def _drop_kept_foreign_keys(cur, req: TableRestoreRequest) -> list[str]:
    """Drop the foreign keys of the tables moved aside: a kept copy must neither refuse the live tables'
    deletes nor have rows deleted by their cascades."""
    cur.execute("SELECT c.relname, k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.contype = 'f' AND n.nspname = %s "
                "ORDER BY 1, 2", (req.trash,))
    dropped = []
    for table, constraint in cur.fetchall():
        cur.execute(f"ALTER TABLE {_ident(req.trash, table)} DROP CONSTRAINT {_ident(constraint)}")
        dropped.append(f"{table_name(req.trash, table)}.{table_name('public', constraint)}")
    return dropped


def already_done(cur, req: TableRestoreRequest) -> bool:
    """Whether this run's restore already finished: its replaced schema records these tables, still holds the
    ones it moved aside, the live tables are the ones it restored and the version table is at the revision."""
    from ansible.module_utils.pg_catalog import read_revisions

    cur.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (req.trash,))
    row = cur.fetchone()
    if not row or not (row[0] or "").startswith(_MARK):
        return False
    try:
        marker = json.loads(row[0][len(_MARK):])
    except ValueError:
        return False
    if [tuple(p) for p in marker.get("tables", [])] != sorted(req.wanted) or [
            tuple(p) for p in marker.get("moved", [])] != sorted(req.moved):
        return False
    where = [((req.trash, t), None) for _, t in marker.get("replaced", [])]
    where += [((s, t), oid) for s, t, oid in marker.get("restored", [])]
    for (schema, table), oid in where:
        cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = %s", (schema, table))
        found = cur.fetchone()
        if found is None or (oid is not None and found[0] != oid):
            return False
    return read_revisions(cur, req.version_table) == sorted(req.revision)


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
                done = _swap_statements(cur, req)
                _set_revision(cur, req)
                cur.execute("COMMIT")
            return {**done, "swap_s": round(time.monotonic() - started, 3), "swap_attempts": attempt}
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
    """Restore ``req.tables`` in place from the backup (see the module docstring); refusals change nothing, a
    failure after the side schema exists drops it, a restore already done is recognised (changed: false)."""
    started = time.monotonic()
    fmt = _checked_backup(req)
    conn = req.conn.connect()
    try:
        result: dict[str, Any] = {"tables": _names(req.wanted), "moved_aside": _names(req.moved),
                                  "replaced_schema": req.trash, "revision": req.revision, "format": fmt,
                                  "already_done": False, "dropped_foreign_keys": []}
        with conn.cursor() as cur:
            done = already_done(cur, req)
            refused = [] if done else refusals(cur, req)
        if refused:
            raise OperatorError(f"The tables cannot be restored on their own: {'; '.join(refused)}. Nothing was "
                                "changed.", "Restore the whole backup instead (pg_restore, or allow "
                                "rm_allow_restore_from_backup), or fix forward.", refusals=refused)
        if done or check:
            return {**result, "changed": False, "planned": not done, "already_done": done, "swap_s": 0.0,
                    "swap_attempts": 0, "duration_s": round(time.monotonic() - started, 3)}
        loaded = _load(req, fmt)
        try:
            result.update(swap(conn, req), rows=loaded, changed=True, planned=False)
        except Exception as exc:
            dropped = _drop_side(req)
            raise _swap_failed(conn, req, exc, dropped) from None
    finally:
        conn.close()
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _swap_failed(conn, req: TableRestoreRequest, exc: Exception, side_dropped: bool) -> OperatorError:
    """The swap's failure explained: which tables, that nothing was swapped, how to retry."""
    from ansible.module_utils.alembic_session import is_lock_timeout

    names = ", ".join(_names(req.wanted | req.moved))
    side = f"the side schema {req.side} was dropped" if side_dropped else f"drop the side schema {req.side}"
    nothing = (f"Nothing was swapped: the transaction was rolled back, so {names} and the version table are as they "
               f"were ({side}).")
    if not is_lock_timeout(exc):
        text = (getattr(exc, "pgerror", None) or str(exc)).strip()
        return OperatorError(f"The swap of {names} failed: {type(exc).__name__}: {text}. {nothing}",
                             f"Fix the cause, then run the same task again (same run_id {req.run_id}).")
    held = _held_by_others(conn, req)
    return OperatorError(
        f"The swap of {names} hit the lock timeout (lock_timeout {req.lock_timeout}) on each of its "
        f"{req.swap_retries + 1} attempts: another session holds a lock on "
        f"{', '.join(held) if held else 'one of them'}. {nothing}",
        f"Retry the same task (same run_id {req.run_id}) when that session has finished (pg_stat_activity, "
        "pg_locks name it), or with a longer lock_timeout or more swap_retries.", locked_tables=held)


def _held_by_others(conn, req: TableRestoreRequest) -> list[str]:
    """The tables of the swap another session holds a lock on (best effort: [] when it cannot tell)."""
    members = sorted(req.wanted | req.moved)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT n.nspname, c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE l.granted AND l.pid <> pg_backend_pid() "
                        "AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                        ([s for s, _ in members], [t for _, t in members]))
            return _names(cur.fetchall())
    except Exception:  # noqa: BLE001 - only makes the message more precise
        return []


def _load(req: TableRestoreRequest, fmt: str) -> dict[str, int]:
    """The side schema loaded on a connection of its own (the dump's session settings stay there)."""
    loader = req.conn.connect()
    try:
        loaded = load_side(loader, req, fmt)
    except Exception as exc:
        loader.close()
        dropped = _drop_side(req)
        if isinstance(exc, OperatorError):
            raise
        text = (getattr(exc, "pgerror", None) or str(exc)).strip()
        side = f"the side schema {req.side} was dropped" if dropped else f"drop the side schema {req.side}"
        raise OperatorError(f"Loading the tables from the backup failed: {text}. Nothing was changed ({side}).",
                            "Restore the whole backup instead.") from None
    finally:
        loader.close()
    missing = sorted(name for name in _names(req.wanted) if name not in loaded)
    if missing:
        _drop_side(req)
        raise OperatorError(f"The backup holds no data for {', '.join(missing)}. Nothing was changed.",
                            "Check the table names; a table the plan created is moved aside, not restored.")
    return loaded


def _drop_side(req: TableRestoreRequest) -> bool:
    """Drop the side schema (whatever the load left in it); whether that worked."""
    try:
        conn = req.conn.connect()
    except Exception:  # noqa: BLE001 - the caller's error says to drop it by hand
        return False
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {_ident(req.side)} CASCADE")
        return True
    except Exception:  # noqa: BLE001 - as above
        return False
    finally:
        conn.close()
