"""Take a verified backup with pg_dump: the logic behind the ``pg_backup`` module.

Order matters and is the point of this file: connect and refuse an old client before writing anything;
dump to ``<name>.partial`` while hashing; verify the written bytes; only then rename to the final name and
write the manifest. A failure at any step removes the ``.partial``, so nothing unfinished ever looks like
a backup (the runbook's ``pg_dump > file`` does).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible.module_utils.backup_manifest import (
    FORMATS,
    PARTIAL_SUFFIX,
    HashingWriter,
    backup_name,
    backup_size,
    directory_digest,
    directory_files,
    iso,
    latest_verified,
    manifest_path_for,
    remove_backup,
    remove_path,
    retention_victims,
    scan_backups,
    sha256_file,
    stale_partials,
    utc_now,
    validate_label,
    write_manifest,
)
from ansible.module_utils.fast_gzip import GzipHashingSink, compress_data_files, describe, open_read
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_client_tools import (
    ClientTools,
    Compression,
    check_compression,
    find_client_tools,
    parse_compression,
    pg_dump_compression_args,
)
from ansible.module_utils.pg_connection import connect, libpq_env, parse_url, redact, secrets_of, server_version

DUMP_COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
_CHUNK = 1 << 20
# Variables that must not leak into a tool that only reads files (pg_restore --list).
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGOPTIONS")


@dataclass
class BackupRequest:
    url: str
    dest: str
    format: str = "plain"
    compression: str | int | None = None  # None: gzip:1 (none for tar)
    jobs: int = 2
    verify: bool = True
    keep: int = 0
    label: str | None = None
    pg_bin_dir: str | None = None
    version_table: str = "alembic_version"
    max_age: int = 0
    check: bool = False
    verify_read: bool = False  # also read every byte back through pg_restore (slower, stronger)


# --- small shared helpers (pg_restore uses them too) -------------------------------------------------


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def offline_env() -> dict[str, str]:
    """Environment for a client tool that must not connect (it only reads a backup file)."""
    return {k: v for k, v in os.environ.items() if k not in _LIBPQ_VARS}


def tool_failure(tool: str, rc: int, stderr: str, secrets: list[str], hint: str) -> OperatorError:
    text = redact((stderr or "").strip(), secrets)
    lines = text.splitlines()
    if len(lines) > 20:
        text = "\n".join(lines[:5] + ["..."] + lines[-14:])
    text = text or "no error output"
    if not text.endswith((".", "!", "?")):
        text += "."
    return OperatorError(f"{tool} failed (exit code {rc}): {text}", hint, exit_code=rc)


def run_tool(cmd: list[str], env: dict[str, str], secrets: list[str], hint: str) -> str:
    """Run a client tool to completion; return stdout, raise OperatorError (redacted stderr) on failure."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise tool_failure(Path(cmd[0]).name, proc.returncode, proc.stderr, secrets, hint)
    return proc.stdout


def split_table(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def read_revisions(conn, version_table: str = "alembic_version") -> list[str]:
    """The Alembic revision(s) recorded in ``version_table`` ([] when the table does not exist)."""
    from psycopg2 import sql

    schema, table = split_table(version_table)
    ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (ident.as_string(conn),))
        if cur.fetchone()[0] is None:
            return []
        cur.execute(sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(ident))
        return [row[0] for row in cur.fetchall()]


USER_TABLES_SQL = """
SELECT n.nspname, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'
 ORDER BY 1, 2
"""


def user_tables(conn) -> list[tuple[str, str]]:
    """(schema, table) of every user table outside the system schemas."""
    with conn.cursor() as cur:
        cur.execute(USER_TABLES_SQL)
        return [(row[0], row[1]) for row in cur.fetchall()]


def table_key(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


@contextlib.contextmanager
def terminate_as_exception():
    """Turn SIGTERM (Ansible's timeout, an operator's kill) into an exception so cleanup runs."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the backup --------------------------------------------------------------------------------------


def _database_facts(url: str, version_table: str) -> dict[str, Any]:
    import psycopg2

    conn = connect(url)
    try:
        major, full = server_version(conn)
        try:
            revisions = read_revisions(conn, version_table)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_database_size(current_database())")
                size = cur.fetchone()[0]
            tables = len(user_tables(conn))
        except psycopg2.Error as exc:
            raise OperatorError(
                f"Cannot read the database before the backup: {str(exc).strip()}",
                f"Check that the user may read the database and that version_table '{version_table}' is right.",
            ) from None
    finally:
        conn.close()
    return {"server_major": major, "server_version": full, "revisions": revisions, "database_size_bytes": size,
            "table_count": tables}


def _unique_path(dest: Path, database: str, fmt: str, comp: Compression, label: str | None) -> Path:
    """A final name not taken yet (neither finished nor partial); waits for the next second if needed."""
    for _ in range(30):
        path = dest / backup_name(database, utc_now(), fmt, comp.compresses, label)
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        if not (path.exists() or partial.exists() or manifest_path_for(path).exists()):
            return path
        time.sleep(0.25)
    raise OperatorError(f"Cannot find a free backup name in {dest}.", "Remove stray files from the directory.")


def _stream_dump(cmd: list[str], env: dict[str, str], target: Path, gzip_level: int | None,
                 secrets: list[str]) -> tuple[str, int, bytes]:
    """Run pg_dump writing to stdout; hash and write (optionally gzip) its output to ``target``.

    Returns (sha256 and size of what was written, the last 4 KiB pg_dump produced)."""
    tail = b""
    with tempfile.TemporaryFile() as errors, open(target, "xb") as raw:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env)
        writer = GzipHashingSink(raw, gzip_level) if gzip_level else HashingWriter(raw)
        try:
            for chunk in _read_ahead(proc.stdout.fileno()):
                writer.write(chunk)
                tail = (tail + chunk[-4096:])[-4096:]
            if gzip_level:
                writer.close()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        raw.flush()
        os.fsync(raw.fileno())
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if rc != 0:
        raise tool_failure("pg_dump", rc, stderr, secrets, "See pg_dump's error above; nothing was kept.")
    return writer.hexdigest, writer.size, tail


def _read_ahead(fd: int, depth: int = 32):
    """Yield a pipe's data while a thread keeps reading ahead, so pg_dump never waits for our gzip.

    The pipe is widened to 1 MiB (Linux) so both sides move data in large pieces.
    """
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _CHUNK)
    chunks: queue.Queue = queue.Queue(maxsize=depth)

    def reader() -> None:
        try:
            while True:
                data = os.read(fd, _CHUNK)
                chunks.put(data)
                if not data:
                    return
        except OSError as exc:
            chunks.put(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    while True:
        item = chunks.get()
        if isinstance(item, OSError):
            raise item
        if not item:
            break
        yield item
    thread.join()


def verify_plain(path: Path, compressed: bool) -> None:
    """A plain dump decodes fully and ends with pg_dump's completion marker."""
    opener = open_read if compressed else open
    tail = b""
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                tail = (tail + chunk)[-4096:]
    except Exception as exc:  # noqa: BLE001 - zlib, ISA-L and gzip each raise their own error types
        raise OperatorError(f"Verification failed: {path.name} does not decompress: {exc}.",
                            "Take another backup; check free disk space.") from None
    if DUMP_COMPLETE_MARKER not in tail:
        raise OperatorError(
            f"Verification failed: {path.name} does not end with pg_dump's completion marker (it is truncated).",
            "Take another backup; check free disk space and pg_dump's output.",
        )


def verify_archive(path: Path, fmt: str, client: ClientTools, read_all: bool = False) -> int:
    """``pg_restore --list`` (and, for a directory, every data file the TOC names is there); with
    ``read_all`` also a full read to /dev/null. Returns the number of TABLE DATA entries."""
    flag = {"custom": "-Fc", "tar": "-Ft", "directory": "-Fd"}[fmt]
    hint = "Take another backup; the archive is unreadable."
    listing = run_tool([client.path("pg_restore"), "--list", flag, str(path)], offline_env(), [], hint)
    data_ids = [line.split(";", 1)[0].strip() for line in listing.splitlines()
                if " TABLE DATA " in line and not line.startswith(";")]
    if fmt == "directory":
        suffixes = ("", ".gz", ".lz4", ".zst")
        missing = [i for i in data_ids if not any((path / f"{i}.dat{ext}").exists() for ext in suffixes)]
        if missing:
            raise OperatorError(f"Verification failed: data files of TOC entries {', '.join(missing[:5])} are missing.",
                                hint)
    if read_all:
        run_tool([client.path("pg_restore"), flag, "-f", os.devnull, str(path)], offline_env(), [], hint)
    return len(data_ids)


def database_errors_explained(what: str):
    """Turn an unexpected psycopg2 error into an OperatorError instead of a module traceback."""

    def wrap(func):
        @functools.wraps(func)
        def inner(*args, **kwargs):
            import psycopg2

            try:
                return func(*args, **kwargs)
            except psycopg2.Error as exc:
                raise OperatorError(
                    f"{what} failed on a database error: {str(exc).strip()}",
                    "Check the user's privileges on the database and the server log; then rerun.",
                ) from None

        return inner

    return wrap


@database_errors_explained("The backup")
def run_backup(req: BackupRequest) -> dict[str, Any]:
    started = time.monotonic()
    started_at = utc_now()
    if req.format not in FORMATS:
        raise OperatorError(f"Unknown backup format '{req.format}'.", f"Use one of: {', '.join(FORMATS)}.")
    if req.jobs < 1:
        raise OperatorError(f"jobs must be at least 1 (got {req.jobs}).", "Use jobs: 2, or more for big databases.")
    if req.keep < 0 or req.max_age < 0:
        raise OperatorError("keep and max_age cannot be negative.", "Use 0 to turn them off.")
    label = validate_label(req.label)
    comp = parse_compression(req.compression if req.compression not in (None, "") else
                             ("none" if req.format == "tar" else "gzip:1"))
    secrets = secrets_of(req.url)
    info = parse_url(req.url)
    database = info.dbname
    dest = Path(req.dest).expanduser().absolute()
    if dest.exists() and not dest.is_dir():
        raise OperatorError(f"dest {dest} exists and is not a directory.", "Point dest at a backup directory.")

    facts = _database_facts(req.url, req.version_table)
    if req.max_age > 0:
        # Reuse only a backup of this database as it is now: same server, same Alembic revision.
        latest = latest_verified(scan_backups(dest), database)
        current = ",".join(facts["revisions"]) or None
        same = latest is not None and (latest.manifest or {}).get("alembic_revision") == current \
            and (latest.manifest or {}).get("host") == info.where
        if same and (utc_now() - latest.finished_at).total_seconds() < req.max_age:
            return _result(latest.path, latest.manifest or {}, changed=False, reused=True, removed=[],
                           duration=time.monotonic() - started)

    client = find_client_tools(facts["server_major"], facts["server_version"], req.pg_bin_dir, tools=("pg_dump",
                               "pg_restore"))
    check_compression(comp, req.format, client)
    revisions = facts["revisions"]
    base_manifest: dict[str, Any] = {
        "database": database,
        "host": info.where,
        "server_version": facts["server_version"],
        "client_version": client.version,
        "alembic_revision": ",".join(revisions) if revisions else None,
        "alembic_revisions": revisions,
        "label": label,
        "format": req.format,
        "compression": comp.spec,
        "jobs": req.jobs if req.format == "directory" else 1,
        "database_size_bytes": facts["database_size_bytes"],
        "table_count": facts["table_count"],
    }
    if req.check:
        path = dest / backup_name(database, started_at, req.format, comp.compresses, label)
        planned = {**base_manifest, "path": path.name, "verified": False}
        return _result(path, planned, changed=True, reused=False, removed=[], duration=time.monotonic() - started)

    dest.mkdir(parents=True, exist_ok=True)
    path = _unique_path(dest, database, req.format, comp, label)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    started_at = utc_now()
    env = libpq_env(req.url)
    files: dict[str, str] | None = None
    verify_method = "none"
    try:
        with terminate_as_exception():
            dump_started = time.monotonic()
            cmd = [client.path("pg_dump"), "--no-password"]
            if req.format == "directory":
                # gzip is done here, not by pg_dump (module_utils/fast_gzip.py says why).
                ours = comp.method == "gzip"
                dump_comp = parse_compression("none") if ours else comp
                cmd += ["-Fd", "-j", str(req.jobs), *pg_dump_compression_args(dump_comp, client.major, "directory"),
                        "-f", str(partial)]
                run_tool(cmd, env, secrets, "See pg_dump's error above; nothing was kept.")
                dump_duration = time.monotonic() - dump_started
                # Compress and hash in parallel right away, while the files are still in the page cache.
                files = compress_data_files(partial, comp.level or 1, workers=req.jobs) if ours else {}
                rest = [rel for rel in directory_files(partial) if rel not in files]
                files.update(zip(rest, map(lambda rel: sha256_file(partial / rel), rest), strict=True))
                sha256 = directory_digest(files)
                size = backup_size(partial)
                if ours:
                    base_manifest["compressed_by"] = describe(comp.level or 1)
            else:
                if req.format == "plain":
                    cmd += ["-Fp"]
                    level = (comp.level or 1) if comp.compresses else None
                    if level:
                        base_manifest["compressed_by"] = describe(level)
                else:
                    cmd += ["-Fc" if req.format == "custom" else "-Ft",
                            *pg_dump_compression_args(comp, client.major, req.format)]
                    level = None
                sha256, size, stream_tail = _stream_dump(cmd, env, partial, level, secrets)
                dump_duration = time.monotonic() - dump_started
            if req.verify:
                if req.format == "plain":
                    # Checked on the stream as it was written; re-reading the file is the optional deep check.
                    if DUMP_COMPLETE_MARKER not in stream_tail:
                        raise OperatorError(
                            f"Verification failed: pg_dump's output for {path.name} does not end with its "
                            "completion marker (the dump stopped early).",
                            "Take another backup; check pg_dump's output and the server log.",
                        )
                    verify_method = "completion marker on the stream"
                    if req.verify_read:
                        verify_plain(partial, comp.compresses)
                        verify_method += " + full decode of the file"
                else:
                    verify_archive(partial, req.format, client, read_all=req.verify_read)
                    verify_method = "pg_restore --list" + (" + full read" if req.verify_read else "") + (
                        " + data files present" if req.format == "directory" else "")
            os.replace(partial, path)
    except BaseException:
        remove_path(partial)
        raise
    finished_at = utc_now()
    manifest = {
        **base_manifest,
        "path": path.name,
        "size_bytes": size,
        "sha256": sha256,
        "started_at": iso(started_at),
        "finished_at": iso(finished_at),
        "duration_s": round(time.monotonic() - started, 3),
        "dump_duration_s": round(dump_duration, 3),
        "verified": bool(req.verify),
        "verify_method": verify_method,
    }
    if files is not None:
        manifest["files"] = files
    write_manifest(path, manifest)
    manifest["format_version"] = 1

    removed: list[str] = []
    if req.keep > 0:
        for entry in retention_victims(scan_backups(dest), database, req.keep, protect=(path,)):
            removed += remove_backup(entry)
    for leftover in stale_partials(dest, database):
        remove_path(leftover)
        removed.append(str(leftover))
    return _result(path, manifest, changed=True, reused=False, removed=removed, duration=time.monotonic() - started)


def _result(path: Path, manifest: dict[str, Any], *, changed: bool, reused: bool, removed: list[str],
            duration: float) -> dict[str, Any]:
    database = manifest.get("database")
    size = manifest.get("size_bytes")
    if reused:
        msg = f"Reused backup {path} of {database} finished at {manifest.get('finished_at')} (younger than max_age)"
    elif size is None:
        msg = f"Would back up {database} to {path}"
    else:
        msg = f"Backed up {database} ({human_size(size)}) to {path} in {duration:.1f} s"
    return {
        "changed": changed,
        "reused": reused,
        "path": str(path),
        "manifest_path": str(manifest_path_for(path)),
        "manifest": manifest,
        "size_bytes": size,
        "sha256": manifest.get("sha256"),
        "duration_s": round(duration, 3),
        "format": manifest.get("format"),
        "compression": manifest.get("compression"),
        "database": database,
        "alembic_revision": manifest.get("alembic_revision"),
        "server_version": manifest.get("server_version"),
        "client_version": manifest.get("client_version"),
        "removed": removed,
        "msg": msg,
    }
