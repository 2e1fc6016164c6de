"""Restore a pg_backup backup: the logic behind the ``pg_restore`` module.

Everything that can refuse does so before the target is touched: the backup's checksum (a flipped
byte or a truncated file), a missing manifest, a client too old for the server or the archive, a
non-empty target without ``confirm``, another database's backup over an existing database without
``source_database`` naming it. Then the load, then a marker comment on the database so a second run
with the same backup is a no-op, then the facts an operator checks by hand today: the Alembic
revision and the row counts.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ansible.module_utils.backup_catalog import Server, backup_for_revision, latest_verified, scan_backups
from ansible.module_utils.backup_manifest import (
    PARTIAL_SUFFIX,
    format_of,
    manifest_path_for,
    parse_backup_name,
    read_manifest,
    verify_checksum,
)
from ansible.module_utils.binary_rows import DATA_FILE, SCHEMA_FILE, read_rows, rows_script
from ansible.module_utils.client_process import run_tool, terminate_as_exception, tool_failure
from ansible.module_utils.db_errors import explained
from ansible.module_utils.fast_gzip import open_read
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.parallel_load import LoadRequest, load_parallel
from ansible.module_utils.pg_catalog import (
    read_revisions,
    server_identity,
    table_facts,
    user_tables,
    version_table_oid,
)
from ansible.module_utils.pg_client_tools import ClientTools, find_client_tools, parse_client_version
from ansible.module_utils.pg_connection import ConnInfo, ParsedOnce, server_version
from ansible.module_utils.plain_dump import NotSplittable, filtered_chunks

MARKER_PREFIX = "release-migrations restored"
INCOMPLETE_PREFIX = "release-migrations restoring"
# Measured (bench/, docs/decisions.md): a larger maintenance_work_mem made index builds slower on the
# 2-core runner (in-memory sorts of the big table thrash the cache), so only commits are relaxed.
LOAD_SETTINGS = "-c synchronous_commit=off"
# The load's own sessions also stop autovacuum sooner: a freshly loaded table draws it, and a build or constraint
# that needs the table waits deadlock_timeout (1 s by default) before autovacuum is told to yield. Superusers only
# may set it; for others the statement sets nothing.
LOAD_SESSION_SQL = (b"SET synchronous_commit = off; SELECT set_config('deadlock_timeout', '100ms', false) "
                    b"WHERE (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)")
ARCHIVE_FLAGS = {"custom": "-Fc", "tar": "-Ft", "directory": "-Fd"}
_RERUN = "The restore stopped at the first error; fix the cause and rerun with clean: true and confirm: true."


@dataclass
class RestoreRequest(ParsedOnce):
    url: str
    src: str
    source_database: str | None = None
    jobs: int = 2
    create: bool = True
    clean: bool = False
    confirm: bool = False
    no_owner: bool = True
    pg_bin_dir: str | None = None
    verify_checksum: bool = True
    count_rows: bool = True
    load_settings: bool = True
    version_table: str = "alembic_version"
    maintenance_db: str = "postgres"
    allow_other_server: bool = False
    # With src a directory: the backup taken at this revision, at most max_backup_age seconds old (drills).
    at_revision: str | None = None
    max_backup_age: float | None = None
    check: bool = False
    conn: ConnInfo | None = field(default=None, repr=False)  # the module's url, parsed once at its entry


@dataclass
class Backup:
    """The backup to load, checked: its path, manifest, format, sha256 and whose database it holds."""

    path: Path
    manifest: dict[str, Any] | None
    fmt: str
    sha256: str | None
    database: str | None
    why: str = "the backup asked for"

    @property
    def marker(self) -> str:
        return f"{MARKER_PREFIX} {self.path.name} sha256 {self.sha256 or 'unverified'}"


def conninfo_dbname(name: str) -> str:
    """``dbname='...'`` for -d: the rest of the connection (password included) comes from the environment."""
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


# --- 1. the backup: resolved and checked, nothing touched yet -----------------------------------


def resolve_src(src: str, source_database: str, prefer_server: Server | None = None,
                at_revision: str | None = None, max_backup_age: float | None = None) -> tuple[Path, str]:
    """A backup path as given, or in a directory: the latest verified backup of ``source_database`` (one of
    ``prefer_server`` when it has any; never a ``pre_restore`` copy), or with ``max_backup_age`` the one taken
    at ``at_revision`` no older than that. Returns (path, why this one)."""
    path = Path(src).expanduser().absolute()
    if path.name.endswith(PARTIAL_SUFFIX):
        raise OperatorError(f"{path} is an unfinished backup (.partial).", "Restore a finished backup.")
    if not path.exists():
        raise OperatorError(f"Backup {path} does not exist.", "Check src: a backup file or the backup directory.")
    if path.is_file():
        return path, "the backup asked for"
    if (path / "toc.dat").is_file() or manifest_path_for(path).is_file() or format_of(path) == "binary":
        return path, "the backup asked for"  # a directory-format or binary backup
    entries = scan_backups(path)
    if max_backup_age is not None:
        chosen, why = backup_for_revision(entries, source_database, at_revision, max_backup_age)
        if chosen is None:
            raise OperatorError(f"{why}.", "Take a backup now (playbooks/backup.yml), or let the drill take one "
                                           "(drill_fresh_backup: when_stale).", stale=True, src=str(path))
        return chosen.path, why
    latest = latest_verified(entries, source_database, prefer_server=prefer_server)
    if latest is None:
        others = sorted({e.database for e in entries if e.verified})
        found = f"verified backups of: {', '.join(others)}" if others else "no verified backups at all"
        raise OperatorError(
            f"No verified backup of database '{source_database}' in {path} ({found}).",
            "Take a backup with pg_backup first, or set source_database to the database the backups are of.",
            src=str(path),
        )
    return latest.path, "the newest verified backup"


def checked_backup(req: RestoreRequest, server: Server | None = None) -> Backup:
    path, why = resolve_src(req.src, req.source_database or req.conn.dbname, prefer_server=server,
                            at_revision=req.at_revision, max_backup_age=req.max_backup_age)
    has_manifest = manifest_path_for(path).is_file() or req.verify_checksum
    manifest = read_manifest(path) if has_manifest else None
    sha256 = (manifest or {}).get("sha256")
    if req.verify_checksum:
        sha256 = verify_checksum(path, manifest or {}, workers=max(4, req.jobs))
    fmt = (manifest or {}).get("format") or format_of(path)
    if fmt is None:
        raise OperatorError(f"Cannot tell the format of backup {path}.",
                            "Name it .dump, .dir, .tar, .sql or .sql.gz, as pg_backup does.")
    database = (manifest or {}).get("database") or (parse_backup_name(path.name) or {}).get("database")
    if req.source_database and database and req.source_database != database:
        raise OperatorError(
            f"Backup {path.name} holds database '{database}', not '{req.source_database}' (source_database).",
            f"Pick a backup of '{req.source_database}', or set source_database: {database} if this one is meant.",
        )
    return Backup(path, manifest, fmt, sha256, database, why)


# --- 2. the target --------------------------------------------------------------------------------


def _database_state(req: RestoreRequest) -> dict[str, Any]:
    """Server version and identity; whether the target exists, its comment, revision and number of tables."""
    with explained(f"Reading the target database '{req.conn.dbname}'"):
        return _read_state(req)


def _read_state(req: RestoreRequest) -> dict[str, Any]:
    conn = req.conn.with_database(req.maintenance_db).connect()
    try:
        major, full = server_version(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                        (req.conn.dbname,))
            row = cur.fetchone()
        system_identifier = server_identity(conn)["system_identifier"]
    finally:
        conn.close()
    state = {"server_major": major, "server_version": full, "exists": row is not None,
             "comment": row[0] if row else None, "tables": 0, "system_identifier": system_identifier}
    if row is not None:
        conn = req.conn.connect()
        try:
            with conn.cursor() as cur:
                oid = version_table_oid(cur, req.version_table)
                state["tables"] = len(user_tables(cur, oid))
                state["revisions"] = read_revisions(cur, req.version_table, oid)
        finally:
            conn.close()
    return state


def _probe_state(req: RestoreRequest) -> dict[str, Any]:
    """Check mode: look at the target if the server answers; plan blind if it does not."""
    try:
        return _database_state(req)
    except OperatorError:
        return {"exists": False, "tables": 0, "comment": None, "server_major": None, "server_version": None,
                "system_identifier": None}


def _client_for(req: RestoreRequest, state: dict[str, Any], backup: Backup) -> ClientTools | None:
    """Client tools new enough for the server and for the pg_dump that wrote the backup."""
    if not state.get("server_major"):
        return None
    minimum = None
    written_by = (backup.manifest or {}).get("client_version")
    if written_by:
        try:
            minimum = parse_client_version(f"(PostgreSQL) {written_by}")[0]
        except OperatorError:
            minimum = None
    return find_client_tools(
        state["server_major"], state["server_version"], req.pg_bin_dir, minimum_major=minimum,
        why=f"and the pg_dump {written_by} that wrote the backup" if minimum else "", tools=("pg_restore", "psql"),
    )


def _refusals(req: RestoreRequest, backup: Backup, state: dict[str, Any]) -> None:
    """Everything that must stop a real restore before the target is touched."""
    database = req.conn.dbname
    exists, non_empty = bool(state.get("exists")), state.get("exists") and state.get("tables", 0) > 0
    if non_empty and not req.confirm:
        raise OperatorError(
            f"Database '{database}' already has {state['tables']} user table(s); restoring {backup.path.name} over "
            "it would overwrite data.",
            "Set confirm: true to restore over it (with clean: true to drop and recreate it first), "
            "or restore into a new database name.",
            database=database, tables=state["tables"],
        )
    if non_empty and backup.database and backup.database != database and req.source_database != backup.database:
        raise OperatorError(
            f"Backup {backup.path.name} holds database '{backup.database}', and the target '{database}' has data: "
            f"restoring it replaces '{database}' with the data of '{backup.database}'.",
            f"If that is meant, confirm it with source_database: {backup.database} "
            f"(restore.yml: -e restore_source_database={backup.database}); otherwise pick a backup of '{database}'.",
            backup_database=backup.database,
        )
    if non_empty and not req.allow_other_server and not _same_server(backup, state, req):
        taken_on = (backup.manifest or {}).get("host") or "another server"
        raise OperatorError(
            f"Backup {backup.path.name} was taken on another server ({taken_on}, system identifier "
            f"{(backup.manifest or {}).get('system_identifier')}) than the target's ({req.conn.where}, "
            f"{state.get('system_identifier')}), and the target '{database}' has data.",
            "If restoring that server's data here is meant (recovery onto a new server), set allow_other_server: "
            "true (restore.yml: -e restore_allow_other_server=true); otherwise pick a backup of this server.",
        )
    if non_empty and not req.clean and backup.fmt in ("plain", "binary"):
        raise OperatorError(
            f"A {backup.fmt} backup cannot be loaded over the existing tables of '{database}'.",
            "Set clean: true (with confirm: true) to drop and recreate the database first.",
        )
    if not exists and not req.create:
        raise OperatorError(f"Database '{database}' does not exist and create is false.",
                            "Set create: true, or create the database first.")


def _same_server(backup: Backup, state: dict[str, Any], req: RestoreRequest) -> bool:
    if not backup.manifest:
        return True  # an unchecked backup (verify_checksum: false) carries no identity to compare
    return Server(state.get("system_identifier"), req.conn.where).took(backup.manifest)


def _already_restored(req: RestoreRequest, backup: Backup, state: dict[str, Any]) -> bool:
    """Marked as restored from this backup, and still what it restored: same revision and number of tables."""
    if not state.get("exists") or state.get("comment") != backup.marker or req.clean:
        return False
    manifest = backup.manifest or {}
    same_revision = ",".join(state.get("revisions") or []) == (manifest.get("alembic_revision") or "")
    same_tables = manifest.get("table_count") is None or manifest.get("table_count") == state.get("tables")
    return same_revision and same_tables


@contextlib.contextmanager
def _restore_lock(req: RestoreRequest):
    """One restore of a database at a time (the lock lives in the maintenance database, which survives the
    target being dropped and created again)."""
    key = zlib.crc32(f"release-migrations:restore:{req.conn.dbname}".encode()) | (0x5EED << 32)
    conn = req.conn.with_database(req.maintenance_db).connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if not cur.fetchone()[0]:
                raise OperatorError(
                    f"Another restore of database '{req.conn.dbname}' is running. Nothing was changed.",
                    "Wait for it to finish (pg_stat_activity shows it), then check the database before rerunning.",
                )
        yield
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _drop_and_create(req: RestoreRequest, drop: bool) -> None:
    from psycopg2 import sql

    name = req.conn.dbname
    conn = req.conn.with_database(req.maintenance_db).connect()
    action = "Dropping and recreating" if drop else "Creating"
    try:
        with explained(f"{action} database '{name}'"), conn.cursor() as cur:
            ident = sql.Identifier(name)
            if drop:
                force = sql.SQL(" WITH (FORCE)") if conn.server_version >= 130000 else sql.SQL("")
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(ident, force))
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
    finally:
        conn.close()


def _drop(req: RestoreRequest) -> None:
    """Drop the target (a load that failed in a database this restore made)."""
    from psycopg2 import sql

    conn = req.conn.with_database(req.maintenance_db).connect()
    try:
        with explained(f"Dropping database '{req.conn.dbname}'"), conn.cursor() as cur:
            force = sql.SQL(" WITH (FORCE)") if conn.server_version >= 130000 else sql.SQL("")
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(req.conn.dbname), force))
    finally:
        conn.close()


def _set_marker(conn_info: ConnInfo, marker: str | None) -> str | None:
    """Mark the database as restored from this backup (None clears the mark); a warning when not allowed."""
    import psycopg2
    from psycopg2 import sql

    conn = conn_info.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(conn_info.dbname)), (marker,))
    except psycopg2.Error as exc:
        return f"Restored, but could not mark the database (a rerun will restore again): {str(exc).strip()}"
    finally:
        conn.close()
    return None


def _after_facts(req: RestoreRequest) -> dict[str, Any]:
    conn = req.conn.connect()
    try:
        with explained("Reading the restored database"):
            return table_facts(conn, req.version_table, counts=req.count_rows)
    finally:
        conn.close()


# --- 3. the load ----------------------------------------------------------------------------------


def _load_plain(path: Path, psql: str, env: dict[str, str], no_owner: bool, secrets: list[str]) -> None:
    """Stream a plain dump (gunzip in Python) into psql, stopping at the first error, in one transaction."""
    def text():
        opener = open_read if path.name.endswith(".gz") else open
        with opener(path, "rb") as source:
            yield from filtered_chunks(source, no_owner)

    _psql_one_transaction([psql, "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=1"], env, text(), secrets)


def _load_binary(root: Path, psql: str, env: dict[str, str], no_owner: bool, secrets: list[str]) -> None:
    """A binary backup in one psql transaction, as by hand (binary_rows.py): its schema, its rows files through
    psql's \\copy (gzip decodes them, in the backup's directory), then the rest."""
    rows = read_rows(root)

    def text():
        with open_read(root / SCHEMA_FILE) as source:
            yield from filtered_chunks(source, no_owner)
        yield b"\n" + rows_script(rows.tables, rows.encoding).encode()
        with open_read(root / DATA_FILE) as source:
            yield from filtered_chunks(source, no_owner)

    _psql_one_transaction([psql, "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=1"], env, text(), secrets,
                          cwd=root)


def _psql_one_transaction(cmd: list[str], env: dict[str, str], pieces, secrets: list[str],
                          cwd: Path | None = None) -> None:
    """Write ``pieces`` into psql between BEGIN and COMMIT, COMMIT as the very last bytes (psql's
    --single-transaction would commit a stream cut short); the first error stops it and rolls back."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env, cwd=cwd)
        broken = False
        try:
            proc.stdin.write(b"BEGIN;\n")
            for piece in pieces:
                proc.stdin.write(piece)
            proc.stdin.write(b"\nCOMMIT;\n")
        except BrokenPipeError:
            broken = True  # psql stopped at an error; its stderr says which
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        rc = proc.wait()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if rc != 0 or broken:
        raise tool_failure("psql", rc or 1, stderr, secrets,
                           "The load stopped at the first error and was rolled back; fix the cause and rerun "
                           "with clean: true.")


def _load(req: RestoreRequest, backup: Backup, client: ClientTools, in_place: bool, owned: bool) -> dict[str, Any]:
    """Load the backup; returns how (``method``, sessions) and the seconds it took (``load_s``)."""
    env = req.conn.libpq_env()
    if req.load_settings:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {LOAD_SETTINGS}".strip()
    started = time.monotonic()
    with terminate_as_exception():
        how = _load_parallel(req, backup, client, env) if owned and req.jobs > 1 else None
        if how is None and backup.fmt == "binary":
            _load_binary(backup.path, client.path("psql"), env, req.no_owner, req.conn.secrets)
            how = {"method": "psql, one transaction", "sessions": 1}
        elif how is None and backup.fmt == "plain":
            _load_plain(backup.path, client.path("psql"), env, req.no_owner, req.conn.secrets)
            how = {"method": "psql, one transaction", "sessions": 1}
        elif how is None:
            flag = ARCHIVE_FLAGS[backup.fmt]
            # Into a database this restore did not make, one transaction (a failure leaves nothing behind).
            jobs = 1 if backup.fmt == "tar" or not owned else req.jobs
            cmd = [client.path("pg_restore"), "--no-password", flag, "-d", conninfo_dbname(req.conn.dbname),
                   "-j", str(jobs), "--exit-on-error", *([] if owned else ["--single-transaction"])]
            if req.no_owner:
                cmd += ["--no-owner", "--no-privileges"]
            if in_place:
                cmd += ["--clean", "--if-exists"]  # confirmed: replace the backup's objects in place
            cmd.append(str(backup.path))
            run_tool(cmd, env, req.conn.secrets, _RERUN)
            how = {"method": f"pg_restore -j {jobs}", "sessions": jobs}
    return {**how, "load_s": round(time.monotonic() - started, 3)}


def _load_parallel(req: RestoreRequest, backup: Backup, client: ClientTools, env: dict[str, str]) -> dict | None:
    """Any format on ``jobs`` sessions at once (module_utils/parallel_load.py), when this restore made the
    database (a failed load is then dropped as a whole). An archive is read as SQL through ``pg_restore -f -``.
    None when the dump is not cut as pg_dump cuts it (nothing was run): the caller loads it the usual way."""
    decoder, rows = None, None
    if backup.fmt == "binary":
        rows = read_rows(backup.path)
    elif backup.fmt != "plain":
        decoder = [client.path("pg_restore"), ARCHIVE_FLAGS[backup.fmt], "-f", "-"]
        decoder += ["--no-owner", "--no-privileges"] if req.no_owner else []
        decoder.append(str(backup.path))
    session_sql = LOAD_SESSION_SQL if req.load_settings else b"SELECT 1"
    # An archive's SQL comes from pg_restore --no-owner --no-privileges already: nothing to filter out of it.
    load = LoadRequest(backup.path, req.conn, client.path("psql"), env, lanes=req.jobs,
                       no_owner=req.no_owner and decoder is None,
                       session_sql=session_sql, secrets=req.conn.secrets, decoder=decoder, rows=rows)
    try:
        return {"method": "parallel" + (" (pg_restore -f - as SQL)" if decoder else ""), "sessions": req.jobs,
                **load_parallel(load)}
    except NotSplittable:
        return None


# --- the whole restore ----------------------------------------------------------------------------


def run_restore(req: RestoreRequest) -> dict[str, Any]:
    started = time.monotonic()
    if req.jobs < 1:
        raise OperatorError(f"jobs must be at least 1 (got {req.jobs}).", "Use jobs: 2 or more.")
    database = req.conn.dbname
    if database in ("template0", "template1") or (req.clean and database == req.maintenance_db):
        raise OperatorError(f"Refusing to restore into '{database}'.", "Name another target database in url.")
    state = _probe_state(req) if req.check else _database_state(req)
    backup = checked_backup(req, Server(state.get("system_identifier"), req.conn.where))
    timings = {"check_s": round(time.monotonic() - started, 3)}  # the target read, the backup's checksum
    base = {"src": str(backup.path), "manifest": backup.manifest, "database": database, "format": backup.fmt,
            "sha256": backup.sha256, "server_version": state.get("server_version"),
            "backup_database": backup.database, "chosen_because": backup.why}
    warnings = []
    if backup.database and backup.database != database:
        warnings.append(f"Backup {backup.path.name} holds database '{backup.database}'; it is restored into "
                        f"'{database}'.")
    if _already_restored(req, backup, state):
        return {**base, **_after_facts(req), "changed": False, "created": False, "cleaned": False,
                "duration_s": round(time.monotonic() - started, 3), "restore_duration_s": 0.0,
                "msg": f"Database {database} was already restored from {backup.path.name}; nothing to do"}
    client = _client_for(req, state, backup)
    if req.check:
        return _planned(req, backup, state, client, base, started, warnings)
    _refusals(req, backup, state)
    assert client is not None  # state came from a real connection
    with explained(f"Restoring {backup.path.name} into '{database}'"), _restore_lock(req):
        created, cleaned, how = _replace_database(req, backup, state, client)
        warning = _set_marker(req.conn, backup.marker)
    loaded = time.monotonic()
    facts = _after_facts(req)
    total = time.monotonic() - started
    timings.update(recreate_s=how.pop("recreate_s"), load_s=how.pop("load_s"),
                   facts_s=round(time.monotonic() - loaded, 3))
    result = {**base, **facts, "changed": True, "created": created, "cleaned": cleaned,
              "client_version": client.version, "duration_s": round(total, 3),
              "restore_duration_s": timings["load_s"], "load": how, "timings": timings,
              "msg": f"Restored {backup.path.name} into {database} ({facts['tables']} tables, revision "
                     f"{','.join(facts['alembic_revision']) or 'none'}) in {total:.1f} s"}
    if warning:
        warnings.append(warning)
    if warnings:
        result["warnings"] = warnings
    return result


def _replace_database(req: RestoreRequest, backup: Backup, state: dict[str, Any],
                      client: ClientTools) -> tuple[bool, bool, dict[str, Any]]:
    """Make the target (create, or drop and recreate), then load. Returns (created, cleaned, how it loaded).

    All or nothing: a database this restore created or cleaned is dropped again when the load fails, so a
    failed restore never leaves a partial database behind; until the load has finished the database's
    comment says it is incomplete (also after a crash), and the 'restored' mark is set only after it."""
    exists = bool(state.get("exists"))
    created, cleaned = not exists, bool(exists and req.clean)
    # A database this restore makes is loaded under another name and renamed when complete: a restore killed
    # half way (SIGKILL, a lost connection) never leaves a half-loaded database under the target's name.
    load_as = replace(req, conn=req.conn.with_database(staging_name(req.conn.dbname))) if created or cleaned else req
    started = time.monotonic()
    try:
        if cleaned:
            _drop(req)
        if created or cleaned:
            _drop_and_create(load_as, drop=True)  # drop: a staging database an earlier killed restore left
    except OperatorError as err:
        if err.details.get("sqlstate") == "42501" and "terminate" not in err.message:
            err.hint = "Grant the user CREATEDB (and ownership of the database to drop it), or create it by hand."
        raise
    # A load that fails half way must not leave an earlier "restored from" mark behind.
    _set_marker(load_as.conn, f"{INCOMPLETE_PREFIX} {backup.path.name}: incomplete until marked restored")
    in_place = exists and not cleaned and state.get("tables", 0) > 0
    recreate_s = round(time.monotonic() - started, 3)
    try:
        how = _load(load_as, backup, client, in_place, owned=created or cleaned)
        if load_as is not req:
            _rename(load_as, req.conn.dbname)
    except BaseException as exc:
        if created or cleaned:
            _drop_partial(load_as, exc, cleaned)
        raise
    return created, cleaned, {**how, "recreate_s": recreate_s}


def staging_name(name: str) -> str:
    """The name a database is loaded under before it is renamed to ``name`` (at most 63 bytes)."""
    suffix = f"_rm_loading_{zlib.crc32(name.encode()):08x}"
    return name.encode()[:63 - len(suffix)].decode("utf-8", "ignore") + suffix


def _rename(loaded: RestoreRequest, name: str) -> None:
    from psycopg2 import sql

    conn = loaded.conn.with_database(loaded.maintenance_db).connect()
    try:
        with explained(f"Renaming the loaded database to '{name}'"), conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(loaded.conn.dbname),
                                                                         sql.Identifier(name)))
    finally:
        conn.close()


def _drop_partial(req: RestoreRequest, exc: BaseException, cleaned: bool) -> None:
    """Drop the database a failed load left half loaded; say so in the error."""
    name = req.conn.dbname
    try:
        with terminate_as_exception():
            _drop(req)
        note = (f"The partially loaded database '{name}' was dropped" + (
            " (its earlier contents had been dropped by clean: true; a pre_restore copy keeps them when one was "
            "taken)" if cleaned else "") + ".")
    except Exception as drop_error:  # noqa: BLE001 - the load's error is the one to raise
        note = (f"Dropping the partially loaded database '{name}' failed too ({drop_error}); it is marked "
                "incomplete: drop it by hand.")
    if isinstance(exc, OperatorError):
        exc.message = f"{exc.message.rstrip().rstrip('.')}. {note}"
        exc.details["dropped"] = "failed" not in note
    elif isinstance(exc, KeyboardInterrupt):
        exc.args = (f"{exc.args[0] if exc.args else 'interrupted'}; {note}",)


def _planned(req: RestoreRequest, backup: Backup, state: dict[str, Any], client: ClientTools | None,
             base: dict[str, Any], started: float, warnings: list[str]) -> dict[str, Any]:
    exists, database = bool(state.get("exists")), req.conn.dbname
    non_empty = exists and state.get("tables", 0) > 0
    try:
        _refusals(req, backup, state)
        refusal = None
    except OperatorError as err:
        refusal = err.message
    result = {**base, "changed": True, "planned": True, "created": not exists, "cleaned": bool(req.clean and exists),
              "confirm_required": bool(non_empty and not req.confirm), "refusal": refusal,
              "alembic_revision": None, "row_counts": {}, "tables": None,
              "duration_s": round(time.monotonic() - started, 3), "restore_duration_s": 0.0,
              "client_version": client.version if client else None,
              "msg": f"Would restore {backup.path.name} into {database}"
                     + (" (after dropping it)" if req.clean and exists else "")
                     + (" (creating it)" if not exists else "")
                     + (f"; a real run would refuse: {refusal}" if refusal else "")}
    if warnings:
        result["warnings"] = warnings
    return result

