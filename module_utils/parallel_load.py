"""Load a plain SQL dump on several sessions at once: its tables' rows and its index builds in parallel.

One session (``psql``, one transaction) creates the schema; then the rows of every table, cut at line
boundaries into chunks (COPY's text format never splits a row across lines), are loaded by ``lanes``
sessions at once, a big table's chunks on several sessions side by side; then the indexes, primary keys,
unique and foreign-key constraints are built on the same sessions, each as soon as nothing it depends on
is still running (a table's rows before its indexes; a constraint alone on its table; a foreign key after
both tables' builds). Anything else after the data (triggers, comments, grants, materialized views, what
the dump does not say) runs in dump order, alone, in ``psql``.

Python only moves large buffers: ISA-L decodes the gzip, the text is cut where a table's data starts and
ends, and each chunk goes to the server as one ``COPY ... FROM STDIN`` through libpq. The load is not one
transaction: the caller makes it all-or-nothing by dropping the database it made when this raises.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.binary_rows import DATA_FILE, SCHEMA_FILE, BinaryRows, split_quoted
from ansible.module_utils.client_process import offline_env, tool_failure
from ansible.module_utils.db_errors import translate
from ansible.module_utils.fast_gzip import open_read
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import ConnInfo
from ansible.module_utils.plain_dump import (
    MAX_SCHEMA_TEXT,
    QUALIFIED_NAME,
    CopyChunk,
    NotSplittable,
    Script,
    dump_entries,
    filtered_chunks,
    key_as_index,
    lock_plan,
    partitioned_tables,
    setting_name,
    split_plain,
)

CHUNK_BYTES = 32 << 20
READ_BYTES = 4 << 20  # what is decoded at a time
# Rows read ahead of the sessions, at most (the decoder is much faster than the server).
PENDING_BYTES = 96 << 20
_COPY_READ = 1 << 20
_RERUN = "Nothing of the partial load was kept; fix the cause and rerun."
_BAD_DATA = ("The backup's rows do not fit its schema (a value its type refuses, a row a constraint refuses): it was "
             "changed after pg_dump wrote it. Restore another backup.")


@dataclass(eq=False)
class Job:
    """One piece of work for a session: rows (``copy``), a statement (``sql``) or a script run alone in
    psql (``script``, ``locks`` None: it waits for everything before it and everything after waits for it)."""

    kind: str
    payload: bytes | tuple[bytes, ...]  # SQL, or the pieces of a COPY chunk
    label: str
    locks: dict[bytes, str] | None = None
    statement: bytes = b""  # COPY ... FROM stdin
    settings: tuple[bytes, ...] = ()  # the dump's session settings at this point
    single_transaction: bool = False
    after_builds: bool = False  # a constraint taking an index built before it: after its table's builds
    source: Path | None = None  # rows in binary COPY format: the gzip file they are read from

    @property
    def size(self) -> int:
        return sum(len(piece) for piece in self.payload) if self.kind == "copy" else 0

    @property
    def phase(self) -> str:
        if self.kind == "copy":
            return "rows"
        if self.kind == "script":
            return "schema" if self.single_transaction else "after"
        return "builds" if self.locks else "after"


def conflicts(first: Job, second: Job) -> bool:
    """Whether two jobs must not run at the same time (the later one waits for the earlier)."""
    if first.locks is None or second.locks is None:
        return True
    for table, mode in first.locks.items():
        other = second.locks.get(table)
        if other is not None and not (mode == other and mode in ("copy", "index")):
            return True
    return False


class Scheduler:
    """Jobs in dump order; a session takes the first one that no earlier unfinished job conflicts with."""

    def __init__(self, pending_limit: int = PENDING_BYTES) -> None:
        self.cond = threading.Condition()
        self.waiting: list[Job] = []
        self.running: list[Job] = []
        self.closed = False
        self.error: BaseException | None = None
        self.pending = 0
        self.pending_limit = pending_limit
        self.origin = time.monotonic()
        self.phases: dict[str, list[float]] = {}  # phase -> [first start, last end], seconds from the origin

    def add(self, job: Job) -> None:
        """Queue a job (the reader); waits while enough rows are queued already."""
        with self.cond:
            while self.pending > self.pending_limit and self.error is None:
                self.cond.wait(0.5)
            if self.error is not None:
                raise _Stopped()
            self.waiting.append(job)
            self.pending += job.size
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self) -> Job | None:
        """The next job a session may run now; None when there is nothing left (or the load failed)."""
        with self.cond:
            while self.error is None:
                job = self._runnable()
                if job is not None:
                    self.waiting.remove(job)
                    self.running.append(job)
                    self.phases.setdefault(job.phase, [time.monotonic() - self.origin, 0.0])
                    self.pending -= job.size
                    self.cond.notify_all()
                    return job
                if self.closed and not self.waiting:
                    return None
                self.cond.wait(0.5)
            return None

    def _runnable(self) -> Job | None:
        blockers = list(self.running)
        for job in self.waiting:
            if not any(conflicts(earlier, job) for earlier in blockers):
                return job
            blockers.append(job)
        return None

    def done(self, job: Job) -> None:
        with self.cond:
            self.running.remove(job)
            self.phases[job.phase][1] = time.monotonic() - self.origin
            self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()


class _Stopped(Exception):
    """The load failed elsewhere; stop reading."""


# --- what the dump becomes ------------------------------------------------------------------------


@dataclass
class Planner:
    """Turns the dump's pieces into jobs: keeps the session settings in force and the size of each table."""

    no_owner: bool
    settings: dict[bytes, bytes] = field(default_factory=dict)
    table_rows: dict[bytes, float] = field(default_factory=dict)  # tables that got rows: estimated from each chunk
    restrict: bytes = b""  # the dump's own "\restrict KEY" line (patched pg_dump), for every psql script
    chunks: int = 0
    comments: list[bytes] = field(default_factory=list)  # the COMMENT entries after the data, run last
    partitioned: set[bytes] = field(default_factory=set)  # partitioned tables (their keys stay as written)

    def last_jobs(self) -> list[Job]:
        """The comments on what the builds made, in one psql script once everything else has run."""
        return self._flush(self.comments)

    def copy_job(self, chunk: CopyChunk) -> Job:
        self.table_rows[chunk.table] = self.table_rows.get(chunk.table, 0) + _estimated_rows(chunk)
        self.chunks += 1
        return Job("copy", chunk.pieces, f"rows of {chunk.table.decode('utf-8', 'replace')}",
                   locks={chunk.table: "copy"}, statement=chunk.statement, settings=self.current())

    def binary_jobs(self, rows: BinaryRows, schema: bytes) -> list[Job]:
        """Every file of a binary backup's rows (binary_rows.py), with the client encoding they were written in.
        Each table is known by its name as the schema's pg_dump wrote it (what the builds after it lock)."""
        settings = tuple({**self.settings, b"client_encoding": b"SET client_encoding = '%s';" % rows.encoding.encode()
                          }.values())
        written = {}
        for entry in dump_entries(schema):
            if entry.kind == "TABLE" and (found := _CREATE_TABLE_RE.match(entry.sql)):
                written[tuple(split_quoted(found["table"].decode("utf-8", "replace")))] = found["table"]
        jobs = []
        for table in rows.tables:
            name = written.get(tuple(split_quoted(table.name)), table.name.encode())
            self.table_rows[name] = self.table_rows.get(name, 0) + table.estimated_rows + 1
            for file in table.files:
                self.chunks += 1
                jobs.append(Job("copy", (), f"rows of {table.name} ({file})", locks={name: "copy"},
                                statement=table.copy_in.encode(), settings=settings, source=rows.root / file))
        return jobs

    def current(self) -> tuple[bytes, ...]:
        return tuple(self.settings.values())

    def script_jobs(self, script: Script) -> list[Job]:
        entries = dump_entries(script.text)
        if script.pre_data:
            for entry in entries:
                self._remember(entry)
            self.partitioned = partitioned_tables(entries)
            self.restrict = next((line + b"\n" for line in script.text.split(b"\n")[:40]
                                  if line.startswith(b"\\restrict ")), b"")
            return [Job("script", self._owned(script.text), "the schema", single_transaction=True)]
        jobs: list[Job] = []
        alone: list[bytes] = []  # entries that run alone, in dump order, as one psql script
        for entry in entries:
            locks = lock_plan(entry) if entry.sql else {}
            if entry.kind == "COMMENT":  # nothing depends on a comment: all of them in one script at the end
                if not self.comments:
                    self.comments.append(self.restrict + b"".join(line + b"\n" for line in self.current()))
                self.comments.append(entry.text + b"".join(line + b"\n" for line in entry.settings))
            elif locks is None:
                if not alone:  # the script starts with the settings in force before its first entry
                    alone.append(self.restrict + b"".join(line + b"\n" for line in self.current()))
                alone.append(entry.text + b"".join(line + b"\n" for line in entry.settings))
            elif split := self._key_split(entry):
                jobs += self._flush(alone)
                table, create, attach = split
                jobs.append(Job("sql", create, f"{_label(entry)} (its index)", locks={table: "index"},
                                settings=self.current()))
                jobs.append(Job("sql", attach, _label(entry), locks={table: "exclusive"}, settings=self.current(),
                                after_builds=True))
            elif entry.sql:
                jobs += self._flush(alone)
                jobs.append(Job("sql", entry.text, _label(entry), locks=locks, settings=self.current()))
            self._remember(entry)
        return [*jobs, *self._flush(alone)]

    def _key_split(self, entry) -> tuple[bytes, bytes, bytes] | None:
        """A key of a table that got rows in this load, split into its index and its constraint (key_as_index)."""
        split = key_as_index(entry, self.partitioned)
        return split if split is not None and split[0] in self.table_rows else None

    def _flush(self, alone: list[bytes]) -> list[Job]:
        text = b"".join(alone)
        alone.clear()
        return [Job("script", self._owned(text), "the statements after the data")] if text else []

    def _remember(self, entry) -> None:
        for line in entry.settings:
            self.settings[setting_name(line)] = line

    def _owned(self, text: bytes) -> bytes:
        return b"".join(filtered_chunks(io.BytesIO(text), self.no_owner)) if self.no_owner else text

    def ordered(self, jobs: list[Job]) -> list[Job]:
        """Index and constraint builds of one stretch, the table with most rows first (the longest builds start
        first); a constraint taking an index built in the stretch right after its table's builds (it locks its
        table: taken at once, before autovacuum, which a freshly loaded table draws, starts on it)."""
        out: list[Job] = []
        run: list[Job] = []
        for job in [*jobs, None]:
            if job is not None and job.kind == "sql" and len(job.locks or {}) == 1:
                run.append(job)
                continue
            run.sort(key=lambda j: (-self.table_rows.get(next(iter(j.locks)), 0), j.after_builds))
            out += run
            run = []
            if job is not None:
                out.append(job)
        return out


_CREATE_TABLE_RE = re.compile(rb"CREATE (?:UNLOGGED )?TABLE (?P<table>%s) " % QUALIFIED_NAME)


def _estimated_rows(chunk: CopyChunk, sample: int = 1 << 18) -> float:
    """A chunk's rows, from the lines of its first 256 KiB (a build's time follows rows, not bytes)."""
    first = chunk.pieces[0] if chunk.pieces else b""
    seen = min(len(first), sample)
    return first.count(b"\n", 0, seen) * chunk.size / seen if seen else 0.0


def _label(entry) -> str:
    first = entry.sql.split(b"\n", 2)
    return " ".join(part.decode("utf-8", "replace").strip() for part in first[:2])[:200]


# --- the sessions ---------------------------------------------------------------------------------


class _Pieces:
    """A file psycopg2's copy_expert reads a chunk from, piece by piece, without joining the pieces."""

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = iter(pieces)

    def read(self, size: int = -1) -> bytes:  # noqa: ARG002 - a whole piece each time (a few MiB at most)
        return next(self.pieces, b"")


class Lane:
    """One session of the load: a libpq connection for rows and statements, psql for scripts."""

    def __init__(self, conn_info: ConnInfo, psql: str, env: dict[str, str], session_sql: bytes,
                 secrets: list[str]) -> None:
        self.conn_info, self.psql, self.env = conn_info, psql, env
        self.session_sql, self.secrets = session_sql, secrets
        self.conn = None
        self.applied: tuple[bytes, ...] | None = None
        self.proc: subprocess.Popen | None = None
        self.rows: dict[bytes, int] = {}

    def run(self, job: Job) -> None:
        if job.kind == "script":
            self._script(job)
            return
        import psycopg2

        cur = self._cursor(job.settings)
        try:
            if job.source is not None:
                with open_read(job.source) as rows:
                    cur.copy_expert(job.statement, rows, size=_COPY_READ)
                table = next(iter(job.locks))
                self.rows[table] = self.rows.get(table, 0) + max(cur.rowcount, 0)
            elif job.kind == "copy":
                cur.copy_expert(job.statement, _Pieces(job.payload), size=_COPY_READ)
                table = next(iter(job.locks))
                self.rows[table] = self.rows.get(table, 0) + max(cur.rowcount, 0)
            else:
                cur.execute(job.payload)
        except psycopg2.Error as exc:
            err = translate(exc, f"Loading {job.label}")
            if str(err.details.get("sqlstate") or "")[:2] in ("22", "23"):
                err.hint = _BAD_DATA
            raise err from None
        except (OSError, EOFError, ValueError) as exc:  # a rows file that does not decode (zlib/ISA-L errors)
            raise OperatorError(f"Loading {job.label} stopped: the file does not decode ({exc}). {_RERUN}",
                                "Restore another backup; this one was damaged after its checksum was taken.") from None
        finally:
            cur.close()

    def _cursor(self, settings: tuple[bytes, ...]):
        if self.conn is None:
            self.conn = self.conn_info.connect()
            with self.conn.cursor() as cur:
                cur.execute(self.session_sql)
        cur = self.conn.cursor()
        if settings != self.applied:
            cur.execute(b"\n".join(settings) or b"SELECT 1")
            self.applied = settings
        return cur

    def _script(self, job: Job) -> None:
        cmd = [self.psql, "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        if job.single_transaction:
            cmd.append("--single-transaction")
        with tempfile.TemporaryFile() as errors:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
                                         env=self.env)
            try:
                self.proc.communicate(job.payload)
            finally:
                rc = self.proc.wait()
                self.proc = None
            errors.seek(0)
            stderr = errors.read().decode("utf-8", "replace")
        if rc != 0:
            raise tool_failure("psql", rc, stderr, self.secrets, f"Loading {job.label} stopped. {_RERUN}")

    def cancel(self) -> None:
        """Stop what this session runs (from another thread)."""
        proc = self.proc
        if proc is not None:
            proc.kill()
        if self.conn is not None:
            with contextlib.suppress(Exception):  # closed or idle: nothing to stop
                self.conn.cancel()

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already gone
                self.conn.close()


def _lane_main(lane: Lane, scheduler: Scheduler) -> None:
    try:
        while (job := scheduler.take()) is not None:
            lane.run(job)
            scheduler.done(job)
    except BaseException as exc:  # noqa: BLE001 - handed to the reader thread, which raises it
        scheduler.fail(exc)
    finally:
        lane.close()


# --- the whole load -------------------------------------------------------------------------------


@dataclass
class LoadRequest:
    path: Path
    conn_info: ConnInfo
    psql: str
    env: dict[str, str]  # psql's environment: the connection, and the load settings in PGOPTIONS
    lanes: int = 2
    no_owner: bool = True
    session_sql: bytes = b"SELECT 1"  # run first on every libpq session (the load settings)
    secrets: list[str] = field(default_factory=list)
    chunk_bytes: int = 0  # 0: CHUNK_BYTES
    # An archive (custom, directory, tar): the command that writes it as SQL (pg_restore -f -), else None.
    decoder: list[str] | None = None
    rows: BinaryRows | None = None  # a binary backup (path is its directory): its rows files


@contextlib.contextmanager
def dump_text(req: LoadRequest):
    """The dump's SQL text as a binary stream: the plain file (gzip decoded by ISA-L), or what ``pg_restore -f -``
    writes for an archive (its exit code is checked when the stream has been read to the end)."""
    if req.decoder is None:
        opener = open_read if req.path.name.endswith(".gz") else open
        with opener(req.path, "rb") as source:
            yield source
        return
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(req.decoder, stdout=subprocess.PIPE, stderr=errors, env=offline_env())
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            raise tool_failure("pg_restore", rc, errors.read().decode("utf-8", "replace"), req.secrets,
                               f"The archive could not be read to its end. {_RERUN}")


def load_parallel(req: LoadRequest) -> dict[str, Any]:
    """Load the dump at ``req.path`` on ``req.lanes`` sessions. Raises NotSplittable (nothing was run)
    when the dump is not cut as pg_dump cuts it, OperatorError when the load fails (sessions stopped)."""
    started = time.monotonic()
    scheduler = Scheduler()
    planner = Planner(req.no_owner)
    lanes = [Lane(req.conn_info, req.psql, req.env, req.session_sql, req.secrets) for _ in range(req.lanes)]
    threads: list[threading.Thread] = []
    try:
        plan = _plan_plain if req.rows is None else _plan_binary
        plan(req, planner, scheduler, lanes, threads)
        scheduler.close()
        _wait(threads)
    except BaseException as exc:
        scheduler.fail(exc)
        _stop(lanes, threads)
        if isinstance(exc, _Stopped):
            raise scheduler.error from None
        raise
    if scheduler.error is not None:
        raise scheduler.error
    rows: dict[bytes, int] = {}
    for lane in lanes:
        for table, count in lane.rows.items():
            rows[table] = rows.get(table, 0) + count
    return {"lanes": req.lanes, "copy_chunks": planner.chunks, "rows_loaded": sum(rows.values()),
            "phases_s": {phase: [round(t, 3) for t in span] for phase, span in scheduler.phases.items()},
            "load_s": round(time.monotonic() - started, 3)}


def _start(lanes: list[Lane], scheduler: Scheduler, threads: list[threading.Thread]) -> None:
    """Start the sessions (added to ``threads``, which the caller stops if anything fails)."""
    for lane in lanes:
        threads.append(threading.Thread(target=_lane_main, args=(lane, scheduler), daemon=True))
        threads[-1].start()


def _plan_binary(req: LoadRequest, planner: Planner, scheduler: Scheduler, lanes: list[Lane],
                 threads: list[threading.Thread]) -> None:
    """A binary backup: its schema in one transaction, then its rows files and the text rest side by side."""
    with open_read(req.path / SCHEMA_FILE) as source:
        schema = source.read(MAX_SCHEMA_TEXT + 1)
    if len(schema) > MAX_SCHEMA_TEXT:
        raise NotSplittable(f"more than {MAX_SCHEMA_TEXT >> 20} MiB of schema")
    for job in planner.script_jobs(Script(schema, pre_data=True)):
        scheduler.add(job)
    _start(lanes, scheduler, threads)
    for job in planner.binary_jobs(req.rows, schema):
        scheduler.add(job)
    chunk = req.chunk_bytes or CHUNK_BYTES
    with open_read(req.path / DATA_FILE) as source:
        pieces = split_plain(source, chunk_size=chunk, read_size=min(READ_BYTES, chunk), schema_first=False)
        _plan_rest(_unrestricted(pieces), planner, scheduler)


def _unrestricted(pieces):
    """The rest of a binary backup without its own ``\\restrict`` line: every script already starts with the
    schema's (pg_backup gives both pg_dump runs the same key)."""
    first = True
    for piece in pieces:
        at = piece.text.find(b"\n\\restrict ", 0, 4096) if first and isinstance(piece, Script) else -1
        if at >= 0:  # in pg_dump's header, before any entry
            end = piece.text.find(b"\n", at + 1)
            piece = Script(piece.text[:at] + piece.text[end:], pre_data=False)
        first = False
        yield piece


def _plan_plain(req: LoadRequest, planner: Planner, scheduler: Scheduler, lanes: list[Lane],
                threads: list[threading.Thread]) -> None:
    """A plain dump (or an archive's SQL): its schema in one transaction, then its rows and the rest."""
    with dump_text(req) as source:
        chunk = req.chunk_bytes or CHUNK_BYTES
        pieces = split_plain(source, chunk_size=chunk, read_size=min(READ_BYTES, chunk))
        first = next(pieces)  # NotSplittable here: nothing has run yet
        for job in planner.script_jobs(first):
            scheduler.add(job)
        _start(lanes, scheduler, threads)
        _plan_rest(pieces, planner, scheduler)


def _plan_rest(pieces, planner: Planner, scheduler: Scheduler) -> None:
    """Queue the rows as they are read; the SQL after them once it is all known (it is small)."""
    after: list[Job] = []
    for piece in pieces:
        if scheduler.error is not None:
            raise _Stopped()
        if isinstance(piece, CopyChunk):
            scheduler.add(planner.copy_job(piece))
        else:
            after += planner.script_jobs(piece)
    for job in [*planner.ordered(after), *planner.last_jobs()]:
        scheduler.add(job)


def _wait(threads: list[threading.Thread]) -> None:
    """Join the sessions, waking up often so SIGTERM (an exception in this thread) is handled at once."""
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)


def _stop(lanes: list[Lane], threads: list[threading.Thread]) -> None:
    for lane in lanes:
        lane.cancel()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
