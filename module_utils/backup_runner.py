"""Take a verified backup with pg_dump: the logic behind the ``pg_backup`` module.

Order matters and is the point of this file: connect and refuse an old client before writing anything;
dump to ``<name>.partial`` while hashing; verify the written bytes; only then rename to the final name and
write the manifest. A failure at any step removes the ``.partial``, so nothing unfinished ever looks like
a backup (the runbook's ``pg_dump > file`` does). A backup reused under ``max_age`` is checked against
its manifest first, like a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.backup_catalog import (
    Server,
    latest_verified,
    remove_backup,
    remove_path,
    retention_victims,
    scan_backups,
    stale_partials,
)
from ansible.module_utils.backup_manifest import (
    FORMATS,
    PARTIAL_SUFFIX,
    HashingWriter,
    backup_name,
    backup_size,
    directory_digest,
    directory_files,
    human_size,
    iso,
    manifest_path_for,
    sha256_file,
    utc_now,
    validate_label,
    verify_checksum,
    write_manifest,
)
from ansible.module_utils.binary_rows import (
    DATA_FILE,
    MIN_TABLE_BYTES,
    PIECE_BYTES,
    ROWS_DIR,
    ROWS_INDEX,
    ROWS_SCRIPT,
    SCHEMA_FILE,
    SIGNATURE,
    TRAILER,
    choose_tables,
    exclude_pattern,
    rows_index,
    rows_script,
    verify_binary,
)
from ansible.module_utils.client_process import offline_env, run_tool, terminate_as_exception, tool_failure
from ansible.module_utils.db_errors import explained
from ansible.module_utils.fast_gzip import GzipHashingSink, compress_data_files, describe
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_catalog import server_identity, table_facts
from ansible.module_utils.pg_client_tools import (
    ClientTools,
    Compression,
    check_compression,
    find_client_tools,
    parse_compression,
    pg_dump_compression_args,
)
from ansible.module_utils.pg_connection import ConnInfo, ParsedOnce, server_version
from ansible.module_utils.plain_dump import DUMP_COMPLETE_MARKER, verify_plain

_CHUNK = 1 << 20
_NOTHING_KEPT = "See pg_dump's error above; nothing was kept."
_DUMPED_FROM = re.compile(rb"Dumped from database version:? (\S+)")


@dataclass
class BackupRequest(ParsedOnce):
    url: str
    dest: str
    format: str = "binary"
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
    protect: list[str] = field(default_factory=list)  # never removed by retention
    binary_min_bytes: int = MIN_TABLE_BYTES  # binary format: smaller tables' rows stay text
    binary_piece_bytes: int = PIECE_BYTES  # binary format: a big table's pages per file
    conn: ConnInfo | None = field(default=None, repr=False)  # the module's url, parsed once at its entry


@dataclass
class Dumped:
    """What a dump wrote to the ``.partial``: its digest and size, and how it was checked."""

    sha256: str
    size: int
    dump_duration: float
    head: bytes = b""  # the start of what pg_dump wrote (plain) or of the archive's listing
    verify_method: str = "none"
    files: dict[str, str] | None = None
    tails: dict[str, bytes] = field(default_factory=dict)  # binary format: the end of what each tool wrote
    manifest_extra: dict[str, Any] = field(default_factory=dict)


# --- before anything is written ------------------------------------------------------------------


def _validate(req: BackupRequest) -> tuple[Compression, str | None, Path]:
    if req.format not in FORMATS:
        raise OperatorError(f"Unknown backup format '{req.format}'.", f"Use one of: {', '.join(FORMATS)}.")
    if req.jobs < 1:
        raise OperatorError(f"jobs must be at least 1 (got {req.jobs}).", "Use jobs: 2, or more for big databases.")
    if req.keep < 0 or req.max_age < 0:
        raise OperatorError("keep and max_age cannot be negative.", "Use 0 to turn them off.")
    if req.binary_min_bytes < 0:
        raise OperatorError(f"binary_min_bytes cannot be negative (got {req.binary_min_bytes}).",
                            "Use 0 for every table, or the default 8388608 (8 MiB).")
    if req.binary_piece_bytes < 8192:
        raise OperatorError(f"binary_piece_bytes must be at least one page, 8192 (got {req.binary_piece_bytes}).",
                            "Use the default, 67108864 (64 MiB).")
    label = validate_label(req.label)
    comp = parse_compression(req.compression if req.compression not in (None, "") else
                             ("none" if req.format == "tar" else "gzip:1"))
    dest = Path(req.dest).expanduser().absolute()
    if dest.exists() and not dest.is_dir():
        raise OperatorError(f"dest {dest} exists and is not a directory.", "Point dest at a backup directory.")
    return comp, label, dest


def _database_facts(conn_info: ConnInfo, version_table: str) -> dict[str, Any]:
    conn = conn_info.connect()
    try:
        major, full = server_version(conn)
        with explained("Reading the database before the backup"):
            facts = table_facts(conn, version_table, counts=False)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_database_size(current_database())")
                size = cur.fetchone()[0]
            identity = server_identity(conn)
    finally:
        conn.close()
    return {"server_major": major, "server_version": full, "revisions": facts["alembic_revision"],
            "database_size_bytes": size, "table_count": facts["tables"], **identity}


def _reusable(req: BackupRequest, dest: Path, facts: dict[str, Any]) -> tuple[Any, str | None]:
    """(the backup max_age lets us reuse, or None; why a candidate was refused, or None).

    Only a verified backup of this very database (same server, same database oid: not one a restore has
    replaced since) at its current revision, younger than max_age, whose bytes still match its manifest
    (size and sha256), is reused. A ``pre_restore`` copy never is.
    """
    server = Server(facts["system_identifier"], req.conn.where)
    latest = latest_verified(scan_backups(dest), req.conn.dbname, server=server)
    if latest is None:
        return None, None
    manifest = latest.manifest or {}
    current = ",".join(facts["revisions"]) or None
    if (manifest.get("alembic_revision") != current or manifest.get("database_oid") != facts["database_oid"]
            or manifest.get("server_version") != facts["server_version"]):
        return None, None
    if (utc_now() - latest.finished_at).total_seconds() >= req.max_age:
        return None, None
    try:
        verify_checksum(latest.path, manifest, workers=max(2, req.jobs))
    except OperatorError as err:
        return None, f"{latest.path.name} was not reused: {err.message}"
    return latest, None


# --- the dump ------------------------------------------------------------------------------------


# The longest name written beside a backup: its manifest's temporary file (".<name>.manifest.json.XXXXXXXX.tmp").
_NAME_OVERHEAD = len(".manifest.json") + 1 + 9 + len(".tmp")


def check_name_length(database: str, fmt: str, comp: Compression, label: str | None) -> None:
    """Refuse, before dumping, a backup whose own or manifest's name the filesystem would refuse (255 bytes)."""
    name = backup_name(database, utc_now(), fmt, comp.compresses, label)
    if len(name.encode()) + _NAME_OVERHEAD > 255:
        raise OperatorError(
            f"The backup's file name would be {len(name.encode())} bytes; with its manifest's that is more than the "
            "255 bytes a file name may have.",
            "Use a shorter label (the database name is part of the file name).",
        )


def _unique_path(dest: Path, database: str, fmt: str, comp: Compression, label: str | None) -> Path:
    """A final name not taken yet (neither finished nor partial); waits for the next second if needed."""
    for _ in range(30):
        path = dest / backup_name(database, utc_now(), fmt, comp.compresses, label)
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        if not (path.exists() or partial.exists() or manifest_path_for(path).exists()):
            return path
        time.sleep(0.25)
    raise OperatorError(f"Cannot find a free backup name in {dest}.", "Remove stray files from the directory.")


_FILL_PAUSE_S = 0.0005
_SHORT_READ = 256 << 10
_READER_JOIN_S = 10.0


class _PipeReader:
    """A pipe's data, read ahead on a thread so pg_dump never waits for our gzip.

    The pipe is widened to 1 MiB (Linux) so both sides move data in large pieces: pg_dump writes 4 KiB at a
    time, and a reader woken by each write would read a piece per write. After a short read the reader lets the
    pipe fill for half a millisecond (a widened pipe holds more than pg_dump writes meanwhile). The data is read
    into ``depth`` buffers used in turn (no allocation per read); each is yielded as a memoryview, valid until
    the next one is asked for. ``close()`` stops the thread; call it before the pipe is closed (after pg_dump is
    gone, when stopping early), so the thread never reads a descriptor that may have been reused.
    """

    def __init__(self, fd: int, depth: int = 32) -> None:
        widened = 0
        with contextlib.suppress(OSError, AttributeError):
            widened = fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _CHUNK)
        self.fd, self.pause = fd, _FILL_PAUSE_S if widened >= _CHUNK else 0.0
        self.free: queue.Queue = queue.Queue()
        for _ in range(depth):
            self.free.put(bytearray(_CHUNK))
        self.filled: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while (buf := self.free.get()) is not None and not self.stopped.is_set():
                size = os.readv(self.fd, [buf])
                self.filled.put((buf, size))
                if not size:
                    return
                if self.pause and size < _SHORT_READ:
                    time.sleep(self.pause)
        except OSError as exc:
            self.filled.put(exc)

    def __iter__(self):
        while True:
            item = self.filled.get()
            if isinstance(item, OSError):
                raise item
            buf, size = item
            if not size:
                return
            yield memoryview(buf)[:size]
            self.free.put(buf)

    def close(self) -> None:
        self.stopped.set()
        self.free.put(None)
        self.thread.join(_READER_JOIN_S)


def _stream_dump(cmd: list[str], env: dict[str, str], target: Path, gzip_level: int | None,
                 secrets: list[str], started=None) -> tuple[str, int, bytes, bytes]:
    """Run pg_dump (or psql) writing to stdout; hash and write (optionally gzip) its output to ``target``.
    ``started`` is called with the process once it runs (so another thread can kill it).

    Returns (sha256 and size of what was written, the first and the last 4 KiB the tool produced)."""
    head = tail = b""
    tool = Path(cmd[0]).name
    with tempfile.TemporaryFile() as errors, open(target, "xb") as raw:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env)
        if started is not None:
            started(proc)
        writer = GzipHashingSink(raw, gzip_level) if gzip_level else HashingWriter(raw)
        reader = _PipeReader(proc.stdout.fileno())
        try:
            for chunk in reader:
                writer.write(chunk)
                if len(head) < 4096:
                    head += chunk[:4096 - len(head)]
                tail = (tail + chunk[-4096:])[-4096:]
            if gzip_level:
                writer.close()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.close()  # pg_dump has ended or was killed: the reader is at the pipe's end or waiting for a buffer
            proc.stdout.close()
        raw.flush()
        os.fsync(raw.fileno())
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    if rc != 0:
        raise tool_failure(tool, rc, stderr, secrets, _NOTHING_KEPT.replace("pg_dump", tool))
    return writer.hexdigest, writer.size, head, tail


def _dump_directory(req: BackupRequest, client: ClientTools, comp: Compression, partial: Path) -> Dumped:
    """pg_dump -Fd with parallel jobs; gzip is ours (module_utils/fast_gzip.py says why), in parallel."""
    ours = comp.method == "gzip"
    dump_comp = parse_compression("none") if ours else comp
    cmd = [client.path("pg_dump"), "--no-password", "-Fd", "-j", str(req.jobs),
           *pg_dump_compression_args(dump_comp, client.major, "directory"), "-f", str(partial)]
    started = time.monotonic()
    run_tool(cmd, req.conn.libpq_env(), req.conn.secrets, _NOTHING_KEPT)
    duration = time.monotonic() - started
    # Compress and hash right away, while the files are still in the page cache.
    files = compress_data_files(partial, comp.level or 1, workers=req.jobs) if ours else {}
    rest = [rel for rel in directory_files(partial) if rel not in files]
    files.update(zip(rest, (sha256_file(partial / rel) for rel in rest), strict=True))
    extra = {"compressed_by": describe(comp.level or 1)} if ours else {}
    return Dumped(directory_digest(files), backup_size(partial), duration, files=files, manifest_extra=extra)


def _dump_stream(req: BackupRequest, client: ClientTools, comp: Compression, partial: Path) -> Dumped:
    """plain (gzipped here while streaming), custom or tar: one stream from pg_dump, hashed as written."""
    cmd = [client.path("pg_dump"), "--no-password"]
    level = None
    extra: dict[str, Any] = {}
    if req.format == "plain":
        cmd += ["-Fp"]
        level = (comp.level or 1) if comp.compresses else None
        if level:
            extra["compressed_by"] = describe(level)
    else:
        cmd += ["-Fc" if req.format == "custom" else "-Ft", *pg_dump_compression_args(comp, client.major, req.format)]
    started = time.monotonic()
    sha256, size, head, tail = _stream_dump(cmd, req.conn.libpq_env(), partial, level, req.conn.secrets)
    dumped = Dumped(sha256, size, time.monotonic() - started, head=head, manifest_extra=extra)
    if req.format == "plain" and req.verify and DUMP_COMPLETE_MARKER not in tail:
        raise OperatorError(
            f"Verification failed: pg_dump's output for {partial.name} does not end with its completion marker "
            "(the dump stopped early).",
            "Take another backup; check pg_dump's output and the server log.",
        )
    return dumped


def _restrict_key_supported(client: ClientTools) -> bool:
    """Whether this pg_dump takes --restrict-key (the releases that write psql's \\restrict line do)."""
    out = subprocess.run([client.path("pg_dump"), "--help"], capture_output=True, text=True, env=offline_env(),
                         check=False)
    return "--restrict-key" in out.stdout


class _Processes:
    """The tools a binary backup runs at once, so one failure (or SIGTERM) stops them all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen] = []
        self.stopped = False

    def started(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.append(proc)
            if self.stopped:
                proc.kill()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()


def _dump_binary(req: BackupRequest, client: ClientTools, comp: Compression, partial: Path) -> Dumped:
    """The binary format (module_utils/binary_rows.py): pg_dump for the schema and the rest, the big tables'
    rows by binary COPY, all in one exported snapshot, on ``jobs`` tools at once; every file gzipped and hashed
    as it is written."""
    import psycopg2

    level = comp.level or 1
    env, secrets = req.conn.libpq_env(), req.conn.secrets
    partial.mkdir()
    (partial / ROWS_DIR).mkdir()
    started = time.monotonic()
    exporter = req.conn.connect(autocommit=False)
    try:
        with explained("Choosing the tables dumped in binary"):
            exporter.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with exporter.cursor() as cur:
                # It holds the snapshot and the locks until the end, idle: no timeout of the role's may end it.
                cur.execute(_session_settings(exporter.server_version))
                cur.execute("SELECT pg_export_snapshot(), pg_encoding_to_char(encoding) FROM pg_database "
                            "WHERE datname = current_database()")
                snapshot, encoding = cur.fetchone()
                tables = choose_tables(cur, req.binary_min_bytes, req.binary_piece_bytes, exporter.server_version,
                                       encoding)
                if tables:  # held until every file is written: no DDL changes a table half way
                    cur.execute(f"LOCK TABLE {', '.join(t.name for t in tables)} IN ACCESS SHARE MODE")
        tasks = _binary_tasks(client, snapshot, encoding, tables, exporter.server_version)
        try:
            files, heads = _run_dumps(tasks, env, partial, level, secrets, req.jobs)
        except OperatorError as err:
            if "lock timeout" in err.message or "LOCK TABLE" in err.message:
                err.hint = (f"A statement that locks a table exclusively (ALTER TABLE, TRUNCATE, …) queued behind the "
                            f"backup's locks; the backup waited {LOCK_WAIT_MS // 1000} s, then let go so it could run. "
                            "Nothing was kept: take the backup again.")
            raise
        exporter.rollback()  # the snapshot was held to the end
    except psycopg2.Error as exc:
        raise OperatorError(f"The session holding the backup's snapshot failed: {str(exc).strip()}. "
                            "Nothing was kept.", "Check the server log and the connection, then take the backup "
                                                 "again.") from None
    finally:
        exporter.close()
    duration = time.monotonic() - started
    for name, text in ((ROWS_INDEX, json.dumps(rows_index(tables, encoding), indent=1) + "\n"),
                       (ROWS_SCRIPT, rows_script(tables, encoding))):
        (partial / name).write_text(text, encoding="utf-8")
        files[name] = sha256_file(partial / name)
    bad = [name for name, (head, tail) in heads.items() if name.startswith(ROWS_DIR)
           and not (head.startswith(SIGNATURE) and tail.endswith(TRAILER))]
    if bad:
        raise OperatorError(f"Verification failed: {bad[0]} is not a whole binary COPY stream (psql stopped early).",
                            "Take another backup; check the server log.")
    dumped = Dumped(directory_digest(files), backup_size(partial), duration, head=heads[SCHEMA_FILE][0], files=files,
                    manifest_extra={"compressed_by": describe(level), "binary_tables": [t.name for t in tables]})
    dumped.tails = {name: tail for name, (_head, tail) in heads.items()}
    return dumped


# How long a tool of a binary backup waits for a table's lock. The backup's own session holds every big table's
# lock from the start, so a longer wait means a DDL statement (ALTER TABLE, TRUNCATE) queued behind it, and every
# later lock, ours and the app's, behind that: the backup fails and lets go rather than wait on it for ever.
LOCK_WAIT_MS = 10000


def _session_settings(server_version: int) -> str:
    """As pg_dump sets its session: no timeouts (the role's own would end a long dump half way)."""
    settings = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0"
    return settings + ("; SET transaction_timeout = 0" if server_version >= 170000 else "")


def _binary_tasks(client: ClientTools, snapshot: str, encoding: str, tables: list,
                  server_version: int) -> list[list[tuple[str, list[str]]]]:
    """The tools a binary backup runs, as chains of (file, command) run one after the other: both pg_dump runs
    in one chain (each locks every table: at once, they could exhaust the server's lock table), then a psql per
    rows file."""
    restrict = ["--restrict-key", _restrict_key()] if _restrict_key_supported(client) else []
    pg_dump = [client.path("pg_dump"), "--no-password", "-Fp", f"--snapshot={snapshot}",
               f"--lock-wait-timeout={LOCK_WAIT_MS}", *restrict]
    excluded = [f"--exclude-table-data={exclude_pattern(t.name)}" for t in tables]
    tasks = [[(SCHEMA_FILE, [*pg_dump, "--section=pre-data"]),
              (DATA_FILE, [*pg_dump, "--section=data", "--section=post-data", *excluded])]]
    # Every row (row_security off fails rather than skip rows), in the database's encoding, as pg_dump reads.
    settings = (f"{_session_settings(server_version)}; SET lock_timeout = {LOCK_WAIT_MS}; SET row_security = off; "
                f"SET client_encoding = '{encoding}'")
    psql = [client.path("psql"), "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", settings,
            "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "-c", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
    number = 0
    for table in tables:
        for piece in table.pieces:
            number += 1
            table.files.append(f"{ROWS_DIR}/{number:04d}.copy.gz")
            tasks.append([(table.files[-1], [*psql, "-c", table.select(piece)])])
    return tasks


def _restrict_key() -> str:
    """A random key for psql's \\restrict line (letters and digits, as pg_dump makes them)."""
    import secrets

    return secrets.token_hex(24)


def _run_dumps(tasks: list[list[tuple[str, list[str]]]], env: dict[str, str], root: Path, level: int,
               secrets: list[str], workers: int) -> tuple[dict[str, str], dict[str, tuple[bytes, bytes]]]:
    """Run every chain of (file, command), each command writing its gzipped output to root/file, ``workers``
    chains at a time; the first failure (or SIGTERM) stops the others. Returns ({file: sha256}, {file: (head,
    tail)})."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    procs = _Processes()
    files: dict[str, str] = {}
    heads: dict[str, tuple[bytes, bytes]] = {}

    def chain(steps: list[tuple[str, list[str]]]) -> None:
        for name, cmd in steps:
            if procs.stopped:
                return
            sha256, _size, head, tail = _stream_dump(cmd, env, root / name, level, secrets, started=procs.started)
            files[name], heads[name] = sha256, (head, tail)

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [pool.submit(chain, steps) for steps in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # the first failure, raised here
    except BaseException:
        procs.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return files, heads


def _verify(req: BackupRequest, client: ClientTools, comp: Compression, partial: Path, dumped: Dumped) -> None:
    if not req.verify:
        return
    if req.format == "binary":
        # Each pg_dump's output ends with its completion marker, each rows file is a whole binary COPY stream.
        unfinished = [name for name in (SCHEMA_FILE, DATA_FILE) if DUMP_COMPLETE_MARKER not in dumped.tails[name]]
        if unfinished:
            raise OperatorError(f"Verification failed: pg_dump's output for {unfinished[0]} does not end with its "
                                "completion marker (the dump stopped early).",
                                "Take another backup; check pg_dump's output and the server log.")
        dumped.verify_method = "completion markers and whole binary COPY streams, on the streams"
        if req.verify_read:
            verify_binary(partial)
            dumped.verify_method += " + full decode of every file"
        return
    if req.format == "plain":
        # Checked on the stream as it was written; re-reading the file is the optional deep check.
        dumped.verify_method = "completion marker on the stream"
        if req.verify_read:
            verify_plain(partial, comp.compresses)
            dumped.verify_method += " + full decode of the file"
        return
    dumped.head = verify_archive(partial, req.format, client, read_all=req.verify_read).encode()[:4096]
    dumped.verify_method = "pg_restore --list" + (" + full read" if req.verify_read else "") + (
        " + data files present" if req.format == "directory" else "")


def verify_archive(path: Path, fmt: str, client: ClientTools, read_all: bool = False) -> str:
    """``pg_restore --list`` (and, for a directory, every data file the TOC names is there); with
    ``read_all`` also a full read to /dev/null. Returns the listing."""
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
    return listing


def check_dumped_from(dumped: Dumped, facts: dict[str, Any], name: str) -> None:
    """pg_dump must have dumped the server we inspected: a URL that the driver and the tools read differently
    (a service file, an environment variable) must not yield a verified backup of another server."""
    found = _DUMPED_FROM.search(dumped.head)
    if found and found.group(1).decode() != facts["server_version"]:
        raise OperatorError(
            f"Verification failed: pg_dump dumped a server at version {found.group(1).decode()} for {name}, but "
            f"the database inspected before the dump is at version {facts['server_version']}: the URL reaches two "
            "different servers. Nothing was kept.",
            "Check the URL's host, port and service and the PG* environment variables, so the driver and the "
            "client tools reach the same server.",
        )


def _dump_and_verify(req: BackupRequest, client: ClientTools, comp: Compression, path: Path,
                     facts: dict[str, Any]) -> Dumped:
    """The dump written as ``<path>.partial``, verified, renamed to ``path``; the partial removed on any failure."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with terminate_as_exception():
            dump = {"directory": _dump_directory, "binary": _dump_binary}.get(req.format, _dump_stream)
            dumped = dump(req, client, comp, partial)
            _verify(req, client, comp, partial, dumped)
            check_dumped_from(dumped, facts, path.name)
            os.replace(partial, path)
    except BaseException:
        remove_path(partial)
        raise
    return dumped


# --- the whole backup ----------------------------------------------------------------------------


def _planned_manifest(req: BackupRequest, facts: dict[str, Any], client: ClientTools, comp: Compression,
                      label: str | None) -> dict[str, Any]:
    revisions = facts["revisions"]
    return {
        "database": req.conn.dbname,
        "host": req.conn.where,
        "server_version": facts["server_version"],
        "client_version": client.version,
        "alembic_revision": ",".join(revisions) if revisions else None,
        "alembic_revisions": revisions,
        "label": label,
        "format": req.format,
        "compression": comp.spec,
        "jobs": req.jobs if req.format in ("directory", "binary") else 1,
        "database_size_bytes": facts["database_size_bytes"],
        "table_count": facts["table_count"],
        "system_identifier": facts["system_identifier"],
        "database_oid": facts["database_oid"],
    }


def _retention(req: BackupRequest, dest: Path, path: Path, server: Server) -> list[str]:
    removed: list[str] = []
    if req.keep > 0:
        for entry in retention_victims(scan_backups(dest), req.conn.dbname, req.keep, protect=(path, *req.protect),
                                       server=server):
            removed += remove_backup(entry)
    for leftover in stale_partials(dest, req.conn.dbname):
        remove_path(leftover)
        removed.append(str(leftover))
    return removed


def run_backup(req: BackupRequest) -> dict[str, Any]:
    started = time.monotonic()
    comp, label, dest = _validate(req)
    check_name_length(req.conn.dbname, req.format, comp, label)
    facts = _database_facts(req.conn, req.version_table)
    refused = None
    if req.max_age > 0:
        reused, refused = _reusable(req, dest, facts)
        if reused is not None:
            return _result(reused.path, reused.manifest or {}, changed=False, reused=True, removed=[],
                           duration=time.monotonic() - started)
    client = find_client_tools(facts["server_major"], facts["server_version"], req.pg_bin_dir,
                               tools=("pg_dump", "pg_restore"))
    check_compression(comp, req.format, client)
    manifest = _planned_manifest(req, facts, client, comp, label)
    if req.check:
        path = dest / backup_name(req.conn.dbname, utc_now(), req.format, comp.compresses, label)
        return _result(path, {**manifest, "path": path.name, "verified": False}, changed=True, reused=False,
                       removed=[], duration=time.monotonic() - started, refused=refused)

    dest.mkdir(parents=True, exist_ok=True)
    path = _unique_path(dest, req.conn.dbname, req.format, comp, label)
    started_at = utc_now()
    dumped = _dump_and_verify(req, client, comp, path, facts)
    manifest.update(dumped.manifest_extra)
    manifest.update({
        "path": path.name, "size_bytes": dumped.size, "sha256": dumped.sha256, "started_at": iso(started_at),
        "finished_at": iso(utc_now()), "duration_s": round(time.monotonic() - started, 3),
        "dump_duration_s": round(dumped.dump_duration, 3), "verified": bool(req.verify),
        "verify_method": dumped.verify_method,
    })
    if dumped.files is not None:
        manifest["files"] = dumped.files
    try:
        write_manifest(path, manifest)
    except BaseException:
        remove_path(path)  # without its manifest a backup must not look finished
        raise
    manifest["format_version"] = 1
    removed = _retention(req, dest, path, Server(facts["system_identifier"], req.conn.where))
    return _result(path, manifest, changed=True, reused=False, removed=removed, duration=time.monotonic() - started,
                   refused=refused)


def _result(path: Path, manifest: dict[str, Any], *, changed: bool, reused: bool, removed: list[str],
            duration: float, refused: str | None = None) -> dict[str, Any]:
    database = manifest.get("database")
    size = manifest.get("size_bytes")
    if reused:
        msg = (f"Reused backup {path} of {database} finished at {manifest.get('finished_at')} (younger than max_age; "
               "size and sha256 checked against its manifest)")
    elif size is None:
        msg = f"Would back up {database} to {path}"
    else:
        msg = f"Backed up {database} ({human_size(size)}) to {path} in {duration:.1f} s"
    result = {
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
    if refused:
        result["reuse_refused"] = refused
        result["warnings"] = [refused + " A new backup was taken instead."]
    return result
