"""Restore a pg_backup backup: the logic behind the ``pg_restore`` module.

Everything that can refuse does so before the target is touched: the backup's checksum (a flipped
byte or a truncated file), a missing manifest, a client too old for the server or the archive, a
non-empty target without ``confirm``. Then the load, then a marker comment on the database so a
second run with the same backup is a no-op, then the facts an operator checks by hand today: the
Alembic revision and the row counts.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible.module_utils.backup_manifest import (
    PARTIAL_SUFFIX,
    format_of,
    latest_verified,
    manifest_path_for,
    read_manifest,
    scan_backups,
    verify_checksum,
)
from ansible.module_utils.backup_runner import (
    database_errors_explained,
    read_revisions,
    run_tool,
    table_key,
    terminate_as_exception,
    tool_failure,
    user_tables,
)
from ansible.module_utils.fast_gzip import open_read
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_client_tools import find_client_tools, parse_client_version
from ansible.module_utils.pg_connection import (
    connect,
    libpq_env,
    parse_url,
    secrets_of,
    server_version,
    with_database,
)

MARKER_PREFIX = "release-migrations restored"
# Measured (bench/, docs/decisions.md): a larger maintenance_work_mem made index builds slower on the
# 2-core runner (in-memory sorts of the big table thrash the cache), so only commits are relaxed.
LOAD_SETTINGS = "-c synchronous_commit=off"
_CHUNK = 1 << 20
# Ownership and privilege statements of a plain dump, skipped with no_owner (pg_restore's
# --no-owner --no-privileges for the archive formats). Never applied inside COPY data.
_OWNER_PRIV_RE = re.compile(
    rb"^(ALTER [A-Z ]+ .* OWNER TO .*;|GRANT .*;|REVOKE .*;|ALTER DEFAULT PRIVILEGES .*;)\s*$"
)


@dataclass
class RestoreRequest:
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
    check: bool = False


def marker_for(backup: Path, sha256: str | None) -> str:
    return f"{MARKER_PREFIX} {backup.name} sha256 {sha256 or 'unverified'}"


def conninfo_dbname(name: str) -> str:
    """``dbname='...'`` for -d: the rest of the connection (password included) comes from the environment."""
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def resolve_src(src: str, source_database: str) -> Path:
    """A backup path as given, or the latest verified backup of ``source_database`` in a directory."""
    path = Path(src).expanduser().absolute()
    if path.name.endswith(PARTIAL_SUFFIX):
        raise OperatorError(f"{path} is an unfinished backup (.partial).", "Restore a finished backup.")
    if not path.exists():
        raise OperatorError(f"Backup {path} does not exist.", "Check src: a backup file or the backup directory.")
    if path.is_file():
        return path
    if (path / "toc.dat").is_file() or manifest_path_for(path).is_file():
        return path  # a directory-format backup
    entries = scan_backups(path)
    latest = latest_verified(entries, source_database)
    if latest is None:
        others = sorted({e.database for e in entries if e.verified})
        found = f"verified backups of: {', '.join(others)}" if others else "no verified backups at all"
        raise OperatorError(
            f"No verified backup of database '{source_database}' in {path} ({found}).",
            "Take a backup with pg_backup first, or set source_database to the database the backups are of.",
            src=str(path),
        )
    return latest.path


def _database_state(url: str, maintenance_db: str) -> dict[str, Any]:
    """Server version; whether the target exists, its comment and number of user tables."""
    database = parse_url(url).dbname
    conn = connect(with_database(url, maintenance_db))
    try:
        major, full = server_version(conn)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (database,)
            )
            row = cur.fetchone()
    finally:
        conn.close()
    state = {"server_major": major, "server_version": full, "exists": row is not None,
             "comment": row[0] if row else None, "tables": 0}
    if row is not None:
        conn = connect(url)
        try:
            state["tables"] = len(user_tables(conn))
        finally:
            conn.close()
    return state


def _drop_and_create(url: str, maintenance_db: str, drop: bool) -> None:
    import psycopg2
    from psycopg2 import sql

    name = parse_url(url).dbname
    conn = connect(with_database(url, maintenance_db))
    try:
        with conn.cursor() as cur:
            ident = sql.Identifier(name)
            if drop:
                force = sql.SQL(" WITH (FORCE)") if conn.server_version >= 130000 else sql.SQL("")
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(ident, force))
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
    except psycopg2.Error as exc:
        action = "drop and recreate" if drop else "create"
        raise OperatorError(
            f"Cannot {action} database '{name}': {str(exc).strip()}",
            "Grant the user CREATEDB (and ownership of the database to drop it), or create it by hand.",
        ) from None
    finally:
        conn.close()


def _set_marker(url: str, marker: str | None) -> str | None:
    """Mark the database as restored from this backup (None clears the mark); a warning when not allowed."""
    import psycopg2
    from psycopg2 import sql

    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(parse_url(url).dbname)),
                        (marker,))
    except psycopg2.Error as exc:
        return f"Restored, but could not mark the database (a rerun will restore again): {str(exc).strip()}"
    finally:
        conn.close()
    return None


def _after_facts(url: str, version_table: str, count_rows: bool) -> dict[str, Any]:
    from psycopg2 import sql

    conn = connect(url)
    try:
        revisions = read_revisions(conn, version_table)
        tables = user_tables(conn)
        counts: dict[str, int] = {}
        if count_rows:
            with conn.cursor() as cur:
                for schema, table in tables:
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
                    counts[table_key(schema, table)] = cur.fetchone()[0]
    finally:
        conn.close()
    return {"alembic_revision": revisions, "row_counts": counts, "tables": len(tables)}


def strip_owner_statements(lines, enabled: bool = True):
    """Yield the lines of a plain dump, without ownership/privilege statements (outside COPY data)."""
    in_copy = False
    for line in lines:
        if in_copy:
            if line.rstrip(b"\r\n") == b"\\.":
                in_copy = False
            yield line
            continue
        if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
            yield line
            continue
        if enabled and _OWNER_PRIV_RE.match(line):
            continue
        yield line


def filtered_chunks(source, enabled: bool = True, chunk_size: int = _CHUNK):
    """What :func:`strip_owner_statements` yields, in large pieces: COPY data passes through as slices
    (no per-line Python work), only the schema lines around it are looked at one by one."""
    pending = b""
    in_copy = False
    while data := source.read(chunk_size):
        out, pending, in_copy = _filter_piece(pending + data, in_copy, enabled)
        if out:
            yield out
    out, pending, in_copy = _filter_piece(pending, in_copy, enabled)
    if out or pending:
        yield out + (pending if in_copy or not (enabled and _OWNER_PRIV_RE.match(pending)) else b"")


def _filter_piece(buf: bytes, in_copy: bool, enabled: bool) -> tuple[bytes, bytes, bool]:
    """(what can be sent, the unfinished rest to keep, whether we are inside COPY data at the rest)."""
    pieces: list[bytes] = []
    pos = 0
    while pos < len(buf):
        if in_copy:
            if buf.startswith(b"\\.\n", pos):
                end = pos + 3
            else:
                found = buf.find(b"\n\\.\n", pos)
                if found < 0:
                    cut = buf.rfind(b"\n", pos) + 1  # send whole lines; keep a partial one
                    if cut > pos:
                        pieces.append(buf[pos:cut])
                        pos = cut
                    break
                end = found + 4
            pieces.append(buf[pos:end])
            pos, in_copy = end, False
            continue
        newline = buf.find(b"\n", pos)
        if newline < 0:
            break
        line = buf[pos:newline + 1]
        if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
            pieces.append(line)
        elif not (enabled and _OWNER_PRIV_RE.match(line)):
            pieces.append(line)
        pos = newline + 1
    return b"".join(pieces), buf[pos:], in_copy


def _load_plain(path: Path, psql: str, env: dict[str, str], no_owner: bool, secrets: list[str]) -> None:
    """Stream a plain dump (gunzip in Python) into psql, stopping at the first error, in one transaction."""
    cmd = [psql, "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
    opener = open_read if path.name.endswith(".gz") else open
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        broken = False
        try:
            with opener(path, "rb") as source:
                for piece in filtered_chunks(source, no_owner):
                    proc.stdin.write(piece)
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


@database_errors_explained("The restore")
def run_restore(req: RestoreRequest) -> dict[str, Any]:
    started = time.monotonic()
    if req.jobs < 1:
        raise OperatorError(f"jobs must be at least 1 (got {req.jobs}).", "Use jobs: 2 or more.")
    info = parse_url(req.url)
    database = info.dbname
    secrets = secrets_of(req.url)
    source_database = req.source_database or database
    if database in ("template0", "template1") or (req.clean and database == req.maintenance_db):
        raise OperatorError(f"Refusing to restore into '{database}'.", "Name another target database in url.")

    # 1. The backup: resolve, read the manifest, check its bytes. Nothing touched yet.
    path = resolve_src(req.src, source_database)
    has_manifest = manifest_path_for(path).is_file() or req.verify_checksum
    manifest: dict[str, Any] | None = read_manifest(path) if has_manifest else None
    sha256 = (manifest or {}).get("sha256")
    if req.verify_checksum:
        sha256 = verify_checksum(path, manifest or {}, workers=max(4, req.jobs))
    fmt = (manifest or {}).get("format") or format_of(path)
    if fmt is None:
        raise OperatorError(f"Cannot tell the format of backup {path}.",
                            "Name it .dump, .dir, .tar, .sql or .sql.gz, as pg_backup does.")
    marker = marker_for(path, sha256)

    # 2. The target: exists? already restored from this backup? non-empty?
    state = _database_state(req.url, req.maintenance_db) if not req.check else _probe_state(req)
    exists = bool(state.get("exists"))
    already = exists and state.get("comment") == marker and not req.clean
    non_empty = exists and state.get("tables", 0) > 0
    base = {"src": str(path), "manifest": manifest, "database": database, "format": fmt, "sha256": sha256,
            "server_version": state.get("server_version")}
    if already:
        facts = _after_facts(req.url, req.version_table, req.count_rows)
        return {**base, **facts, "changed": False, "created": False, "cleaned": False,
                "duration_s": round(time.monotonic() - started, 3), "restore_duration_s": 0.0,
                "msg": f"Database {database} was already restored from {path.name}; nothing to do"}

    # 3. Client tools new enough for the server and for the archive.
    minimum = None
    if manifest and manifest.get("client_version"):
        try:
            minimum = parse_client_version(f"(PostgreSQL) {manifest['client_version']}")[0]
        except OperatorError:
            minimum = None
    client = None
    if state.get("server_major"):
        client = find_client_tools(
            state["server_major"], state["server_version"], req.pg_bin_dir, minimum_major=minimum,
            why=f"and the pg_dump {manifest.get('client_version')} that wrote the backup" if minimum else "",
            tools=("pg_restore", "psql"),
        )
    if req.check:
        return {**base, "changed": True, "created": not exists, "cleaned": bool(req.clean and exists),
                "confirm_required": non_empty and not req.confirm, "alembic_revision": None, "row_counts": {},
                "tables": None, "duration_s": round(time.monotonic() - started, 3), "restore_duration_s": 0.0,
                "client_version": client.version if client else None,
                "msg": f"Would restore {path.name} into {database}"
                       + (" (after dropping it)" if req.clean and exists else "")
                       + (" (creating it)" if not exists else "")}

    if non_empty and not req.confirm:
        raise OperatorError(
            f"Database '{database}' already has {state['tables']} user table(s); restoring {path.name} over it "
            "would overwrite data.",
            "Set confirm: true to restore over it (with clean: true to drop and recreate it first), "
            "or restore into a new database name.",
            database=database, tables=state["tables"],
        )
    if non_empty and not req.clean and fmt == "plain":
        raise OperatorError(
            f"A plain SQL backup cannot be loaded over the existing tables of '{database}'.",
            "Set clean: true (with confirm: true) to drop and recreate the database first.",
        )
    if not exists and not req.create:
        raise OperatorError(f"Database '{database}' does not exist and create is false.",
                            "Set create: true, or create the database first.")
    assert client is not None  # state came from a real connection

    # 4. Make the target, load, mark.
    created = cleaned = False
    if exists and req.clean:
        _drop_and_create(req.url, req.maintenance_db, drop=True)
        cleaned = True
    elif not exists:
        _drop_and_create(req.url, req.maintenance_db, drop=False)
        created = True
    env = libpq_env(req.url)
    if req.load_settings:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {LOAD_SETTINGS}".strip()
    if exists and not cleaned:
        # A load that fails half way must not leave an earlier "restored from" mark behind.
        _set_marker(req.url, None)
    load_started = time.monotonic()
    with terminate_as_exception():
        if fmt == "plain":
            _load_plain(path, client.path("psql"), env, req.no_owner, secrets)
        else:
            flag = {"custom": "-Fc", "tar": "-Ft", "directory": "-Fd"}[fmt]
            jobs = 1 if fmt == "tar" else req.jobs
            cmd = [client.path("pg_restore"), "--no-password", flag, "-d", conninfo_dbname(database),
                   "-j", str(jobs), "--exit-on-error"]
            if req.no_owner:
                cmd += ["--no-owner", "--no-privileges"]
            if non_empty and not cleaned:
                cmd += ["--clean", "--if-exists"]  # confirmed: replace the backup's objects in place
            cmd.append(str(path))
            run_tool(cmd, env, secrets,
                     "The restore stopped at the first error; fix the cause and rerun with clean: true and "
                     "confirm: true.")
    restore_duration = time.monotonic() - load_started
    warning = _set_marker(req.url, marker)
    facts = _after_facts(req.url, req.version_table, req.count_rows)
    duration = time.monotonic() - started
    result = {**base, **facts, "changed": True, "created": created, "cleaned": cleaned,
              "client_version": client.version, "duration_s": round(duration, 3),
              "restore_duration_s": round(restore_duration, 3),
              "msg": f"Restored {path.name} into {database} ({facts['tables']} tables, revision "
                     f"{','.join(facts['alembic_revision']) or 'none'}) in {duration:.1f} s"}
    if warning:
        result["warnings"] = [warning]
    return result


def _probe_state(req: RestoreRequest) -> dict[str, Any]:
    """Check mode: look at the target if the server answers; plan blind if it does not."""
    try:
        return _database_state(req.url, req.maintenance_db)
    except OperatorError:
        return {"exists": False, "tables": 0, "comment": None, "server_major": None, "server_version": None}
