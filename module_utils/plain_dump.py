"""Plain SQL dumps: how pg_dump marks one finished, and the ownership filter for loading one.

A plain dump is finished when its text ends with pg_dump's completion marker (a truncated file
does not). Loading one as another role skips its ownership and privilege statements
(``ALTER ... OWNER TO``, ``GRANT``, ``REVOKE``), as pg_restore's ``--no-owner --no-privileges`` does for
the archive formats; the filter never looks inside COPY data, and passes that data through in large
slices so the load is not paced by Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ansible.module_utils.fast_gzip import open_read
from ansible.module_utils.operator_error import OperatorError

DUMP_COMPLETE_MARKER = b"-- PostgreSQL database dump complete"
CHUNK = 1 << 20
# Ownership and privilege statements of a plain dump. Never applied inside COPY data.
OWNER_PRIV_RE = re.compile(
    rb"^(ALTER [A-Z ]+ .* OWNER TO .*;|GRANT .*;|REVOKE .*;|ALTER DEFAULT PRIVILEGES .*;)\s*$"
)
# What opens a region of SQL text that is not SQL structure: a literal, a quoted name, a dollar quote, a comment.
_OPENS = re.compile(rb"--|/\*|'|\"|\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_NOT_NEWLINE = re.compile(rb"[^\n]")


class Mask:
    """SQL text as its structure: every byte inside a string literal, a quoted name, a dollar-quoted body or a
    block comment becomes ``x`` (newlines and the quotes themselves stay; line comments stay as they are, since
    pg_dump's entry headers are comments). Same length as the text, so a pattern found in the mask is at the
    same place in the text, and never inside a string or a function body. Fed in whole lines, it carries a
    region that spans lines from one piece to the next."""

    def __init__(self) -> None:
        self.close: bytes | None = None  # what ends the region we are in (None: top level)
        self.escapes = False  # an E'...' string: backslash escapes the next byte
        self.depth = 0  # nested block comments

    @property
    def top_level(self) -> bool:
        return self.close is None

    def feed(self, text: bytes) -> bytes:
        out = bytearray(text)
        pos = 0
        while pos < len(text):
            if self.close is None:
                found = _OPENS.search(text, pos)
                if found is None:
                    break
                pos = self._open(text, found)
                continue
            end = self._end(text, pos)
            stop = len(text) if end < 0 else end
            out[pos:stop] = _NOT_NEWLINE.sub(b"x", text[pos:stop])
            if end < 0:
                break
            pos, self.close = end + len(self.close), None
        return bytes(out)

    def _open(self, text: bytes, found: re.Match) -> int:
        token, start = found.group(0), found.start()
        if token == b"--":
            newline = text.find(b"\n", found.end())
            return len(text) if newline < 0 else newline + 1
        self.close = b"*/" if token == b"/*" else token
        self.depth = 1
        self.escapes = token == b"'" and text[start - 1:start] in (b"E", b"e") and not (
            start > 1 and (text[start - 2:start - 1].isalnum() or text[start - 2:start - 1] == b"_"))
        return found.end()

    def _end(self, text: bytes, pos: int) -> int:
        """Where the current region's closing bytes start in ``text`` from ``pos``; -1: not in this text."""
        while True:
            if self.close == b"*/":
                end, nested = text.find(b"*/", pos), text.find(b"/*", pos)
                if 0 <= nested < end:
                    self.depth, pos = self.depth + 1, nested + 2
                    continue
                if end >= 0 and self.depth > 1:
                    self.depth, pos = self.depth - 1, end + 2
                    continue
                return end
            end = text.find(self.close, pos)
            if end < 0 or self.close.startswith(b"$"):
                return end
            if self.escapes and _escaped(text, end):
                pos = end + 1
            elif text[end + 1:end + 2] == self.close:  # '' or "" inside: the quote itself
                pos = end + 2
            else:
                return end


def _escaped(text: bytes, end: int) -> bool:
    backslashes = 0
    while end - backslashes - 1 >= 0 and text[end - backslashes - 1] == 0x5C:
        backslashes += 1
    return backslashes % 2 == 1


def verify_plain(path: Path, compressed: bool) -> None:
    """A plain dump decodes fully and ends with pg_dump's completion marker."""
    opener = open_read if compressed else open
    tail = b""
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                tail = (tail + chunk)[-4096:]
    except Exception as exc:  # noqa: BLE001 - zlib, ISA-L and gzip each raise their own error types
        raise OperatorError(f"Verification failed: {path.name} does not decompress: {exc}.",
                            "Take another backup; check free disk space.") from None
    if DUMP_COMPLETE_MARKER not in tail:
        raise OperatorError(
            f"Verification failed: {path.name} does not end with pg_dump's completion marker (it is truncated).",
            "Take another backup; check free disk space and pg_dump's output.",
        )


def filtered_chunks(source, enabled: bool = True, chunk_size: int = CHUNK):
    """The dump read from ``source`` without ownership statements (when ``enabled``), in large pieces.

    COPY data passes through as slices (no per-line Python work); only the SQL lines around it are looked at,
    and only a statement that starts and ends a line at the top level (never a line of a string, a quoted name
    or a function body) is ever left out."""
    pending = b""
    state = _FilterState()
    while data := source.read(chunk_size):
        out, pending = _filter_piece(pending + data, state, enabled)
        if out:
            yield out
    if pending and state.in_copy:
        yield pending
    elif pending:  # a last line without its newline: looked at as a line, sent as it was
        out, _ = _filter_piece(pending + b"\n", state, enabled)
        if out:
            yield out[:-1]


class _FilterState:
    def __init__(self) -> None:
        self.in_copy = False
        self.copy_header = False  # a COPY statement whose name spans lines (a quoted name with a newline)
        self.mask = Mask()


def _filter_piece(buf: bytes, state: _FilterState, enabled: bool) -> tuple[bytes, bytes]:
    """(what can be sent, the unfinished rest to keep)."""
    pieces: list[bytes] = []
    pos = 0
    while pos < len(buf):
        if state.in_copy:
            pos = _copy_data(buf, pos, pieces, state)
            if state.in_copy:
                break
            continue
        newline = buf.find(b"\n", pos)
        if newline < 0:
            break
        line = buf[pos:newline + 1]
        at_start = state.mask.top_level
        masked = state.mask.feed(line)
        if at_start and masked.startswith(b"COPY "):
            state.copy_header = True
        if state.copy_header and state.mask.top_level and masked.rstrip().endswith(b"FROM stdin;"):
            state.in_copy, state.copy_header = True, False
        keep = not (enabled and at_start and state.mask.top_level and not state.copy_header
                    and OWNER_PRIV_RE.match(masked))
        if keep:
            pieces.append(line)
        pos = newline + 1
    return b"".join(pieces), buf[pos:]


def _copy_data(buf: bytes, pos: int, pieces: list[bytes], state: _FilterState) -> int:
    """Pass COPY data through up to its end marker (included); returns where the rest starts."""
    if buf.startswith(b"\\.\n", pos):
        end = pos + 3
    else:
        found = buf.find(b"\n\\.\n", pos)
        if found < 0:
            cut = buf.rfind(b"\n", pos) + 1  # send whole lines; keep a partial one
            if cut > pos:
                pieces.append(buf[pos:cut])
            return max(cut, pos)
        end = found + 4
    pieces.append(buf[pos:end])
    state.in_copy = False
    return end



# --- cutting a plain dump into work for several sessions -----------------------------------------------

# A (schema-)qualified name as pg_dump writes it: public.events, public."Odd ""name""".
_IDENT = rb'(?:"(?:[^"\n]|"")*"|[^\s."(),;]+)'
QUALIFIED_NAME = rb"%s(?:\.%s)*" % (_IDENT, _IDENT)
# A table's data: pg_dump writes the entry's header, a blank line, then the COPY line.
# Matched in the mask (see Mask): a quoted name's inside is masked, so it holds no quote, maybe a newline.
_MASKED_IDENT = rb'(?:"[^"]*"|[^\s."(),;]+)'
_COPY_START = re.compile(rb"^COPY ", re.M)
_COPY_LINE_RE = re.compile(rb"^COPY (?P<table>%s(?:\.%s)*)(?: \((?:[^()\"\n]|\"[^\"]*\")*\))? FROM stdin;\n"
                           % (_MASKED_IDENT, _MASKED_IDENT), re.M)
_DATA_HEADER_RE = re.compile(rb"(?:^|\n)--\n-- Data for Name: [^\n]*; Type: TABLE DATA; [^\n]*\n--\n\n\Z")
COPY_END = b"\\.\n"
# Text before the first table's data bigger than this is not a dump pg_dump wrote with COPY (e.g. --inserts).
MAX_SCHEMA_TEXT = 256 << 20


class NotSplittable(Exception):
    """The dump is not cut into schema, COPY data and the rest as pg_dump writes it: load it in one session."""


@dataclass(frozen=True)
class CopyChunk:
    """Whole lines of one table's COPY data (COPY's text format never splits a row across lines), as the
    pieces they were read in (no copy of the data is made to cut them)."""

    table: bytes  # the qualified name as the dump writes it
    statement: bytes  # COPY <table> (<columns>) FROM stdin
    pieces: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)


@dataclass(frozen=True)
class Script:
    """SQL text of the dump outside COPY data: the schema before the data (``pre_data``), or what follows."""

    text: bytes
    pre_data: bool = False


class _Blocks:
    """The decoded dump in the pieces it is read in; what was read too far can be put back."""

    def __init__(self, source, read_size: int) -> None:
        self.source, self.read_size = source, read_size
        self.back = b""

    def next(self) -> bytes:
        if self.back:
            data, self.back = self.back, b""
            return data
        return self.source.read(self.read_size)

    def put_back(self, data: bytes) -> None:
        self.back = data + self.back


def split_plain(source, chunk_size: int = 32 << 20, read_size: int = 4 << 20, schema_first: bool = True):
    """Cut a plain dump read from ``source`` into a :class:`Script` of the schema before the first table's
    data (``pre_data``), then, in dump order, :class:`CopyChunk` pieces of about ``chunk_size`` and the
    :class:`Script` text between and after them. Raises :class:`NotSplittable` before yielding anything when
    the dump has no COPY data where pg_dump puts it. ``schema_first`` False: a dump of the sections after the
    schema (no pre-data script; no data is fine)."""
    blocks = _Blocks(source, read_size)
    pre_data = schema_first
    while True:
        text, copy = _text_until_copy(blocks, limit=MAX_SCHEMA_TEXT if pre_data else None)
        if copy is None and pre_data:
            raise NotSplittable("no table data in COPY format")
        if text or pre_data:
            yield Script(text, pre_data=pre_data)
        pre_data = False
        if copy is None:
            return
        yield from _copy_chunks(blocks, *copy, chunk_size)


def _text_until_copy(blocks: _Blocks, limit: int | None) -> tuple[bytes, tuple[bytes, bytes] | None]:
    """(the SQL text up to the next table-data COPY line, (table, COPY statement)); None at the end. Only a COPY
    line at the top level counts (a function body or a string may hold text that looks like one); the text is
    looked at only up to that line (what follows is data)."""
    buf = bytearray()
    masked, mask = bytearray(), Mask()
    look = 0  # where the next candidate COPY line may start
    seen: dict[int, bool] = {}  # candidate: whether it starts at the top level (known once the mask reached it)
    while data := blocks.next():
        buf += data
        while (start := _COPY_START.search(buf, look)) is not None:
            at = start.start()
            if at not in seen:
                seen[at] = _mask_through(buf, masked, mask, at) and mask.top_level
            if _mask_statement(buf, masked, mask, at) is None:
                break  # the COPY statement's end is not read yet
            found = _COPY_LINE_RE.match(masked, at) if seen[at] else None
            if found and _DATA_HEADER_RE.search(masked, max(0, at - 4096), at):
                blocks.put_back(bytes(buf[found.end():]))
                return bytes(buf[:at]), (bytes(buf[found.start("table"):found.end("table")]),
                                         bytes(buf[at:found.end() - 2]))
            look = at + 1
        else:
            look = max(look, buf.rfind(b"\n") + 1)
        if limit is not None and len(buf) > limit:
            raise NotSplittable(f"more than {limit >> 20} MiB of SQL before the first table's data")
    return bytes(buf), None


def _mask_through(buf: bytearray, masked: bytearray, mask: Mask, upto: int) -> bool:
    """Extend the mask over ``buf`` up to ``upto`` (a line start); True when it reached it."""
    if upto > len(masked):
        masked += mask.feed(bytes(buf[len(masked):upto]))
    return len(masked) >= upto


def _mask_statement(buf: bytearray, masked: bytearray, mask: Mask, at: int, lines: int = 20) -> int | None:
    """Extend the mask over the statement that starts at ``at`` (a quoted name may span lines, up to ``lines``);
    its end, or None when that is not read yet."""
    while len(masked) == at or not mask.top_level:
        if buf.count(b"\n", at, len(masked)) >= lines:
            break
        newline = buf.find(b"\n", len(masked))
        if newline < 0:
            return None
        masked += mask.feed(bytes(buf[len(masked):newline + 1]))
    return len(masked)


def _copy_chunks(blocks: _Blocks, table: bytes, statement: bytes, chunk_size: int):
    """One table's COPY data as chunks of whole lines, up to its ``\\.`` line (consumed, not yielded)."""
    pieces: list[bytes] = []
    size = 0
    before = b"\n"  # the last bytes before the block: the end marker may begin there
    while True:
        block = blocks.next()
        if not block:
            raise OperatorError("The plain backup ends inside a table's COPY data (it is truncated).",
                                "Restore another backup; take a new one.")
        found = _end_marker(before, block)
        if found >= 0:
            start = found + 1 - len(before)  # where the marker starts in this block (< 0: in the pieces)
            if start < 0:
                _drop_tail(pieces, -start)
            elif start:
                pieces.append(block[:start])
            blocks.put_back(block[start + len(COPY_END):])
            if pieces:
                yield CopyChunk(table, statement, tuple(pieces))
            return
        pieces.append(block)
        size += len(block)
        before = (before + block[-3:])[-3:]
        if size >= chunk_size and (cut := block.rfind(b"\n") + 1):
            pieces[-1] = block[:cut]
            yield CopyChunk(table, statement, tuple(pieces))
            pieces = [block[cut:]] if cut < len(block) else []
            size = len(block) - cut


_END_LINE = b"\n" + COPY_END
_BACKSLASH_TRIES = 64  # backslashes looked at one by one in a block before searching for the whole line


def _end_marker(before: bytes, block: bytes) -> int:
    """``(before + block).find(b"\\n\\\\.\\n")`` without copying the block: where the end-of-data line's newline is.

    A data line holds a backslash only where COPY escapes something, so the backslashes are found with memchr
    and each one looked at; in a block where they are common the whole line is searched for instead."""
    found = (before + block[:3]).find(_END_LINE)  # a marker starting in ``before``
    if found >= 0:
        return found
    pos = 0
    for _ in range(_BACKSLASH_TRIES):
        slash = block.find(b"\\", pos)
        if slash < 0:
            return -1
        if slash and block[slash - 1] == 10 and block.startswith(COPY_END, slash):
            return len(before) + slash - 1
        pos = slash + 1
    found = block.find(_END_LINE, pos - 1)
    return found + len(before) if found >= 0 else -1


def _drop_tail(pieces: list[bytes], count: int) -> None:
    """Remove the last ``count`` bytes of the pieces (the start of an end marker cut across two reads)."""
    while count and pieces:
        last = pieces.pop()
        if len(last) > count:
            pieces.append(last[:-count])
            return
        count -= len(last)


# --- the SQL around the data: pg_dump's entries, and which may run beside others ----------------------

_ENTRY_HEADER_RE = re.compile(rb"^--\n-- (?:Data for )?Name: [^\n]*?; Type: (?P<type>[^;\n]+);[^\n]*\n--\n", re.M)
# Session settings pg_dump writes between entries (and in its header): they hold for every later entry.
_SETTING_RE = re.compile(
    rb"(?:SET (?P<name>[a-z_]+) = [^\n]*;|SELECT pg_catalog\.set_config\('(?P<config>[a-z_]+)', [^\n]*, false\);)")
SESSION_SETTINGS = frozenset({
    b"statement_timeout", b"lock_timeout", b"idle_in_transaction_session_timeout", b"transaction_timeout",
    b"client_encoding", b"standard_conforming_strings", b"check_function_bodies", b"xmloption",
    b"client_min_messages", b"row_security", b"default_tablespace", b"default_table_access_method",
    b"default_with_oids", b"search_path",
})
_NAME = rb"(?:%s)" % _IDENT
_TABLE = rb"(?P<table>%s)" % QUALIFIED_NAME
_INDEX_RE = re.compile(rb"CREATE (?:UNIQUE )?INDEX %s ON (?:ONLY )?%s USING [^;]*;" % (_NAME, _TABLE))
_CONSTRAINT_RE = re.compile(
    rb"ALTER TABLE ONLY %s\n    ADD CONSTRAINT %s (?:PRIMARY KEY|UNIQUE|EXCLUDE|CHECK)\b[^;]*;" % (_TABLE, _NAME))
_FOREIGN_KEY_RE = re.compile(
    rb"ALTER TABLE ONLY %s\n    ADD CONSTRAINT %s FOREIGN KEY \([^;]*\) REFERENCES (?P<ref>%s)\([^;]*;"
    % (_TABLE, _NAME, QUALIFIED_NAME))
_SETVAL_RE = re.compile(rb"SELECT pg_catalog\.setval\('[^;\n]*', -?\d+, (?:true|false)\);")
# A primary key or unique constraint in its plainest form: no INCLUDE, WITH, tablespace, DEFERRABLE or NULLS clause.
_PLAIN_KEY_RE = re.compile(
    rb"ALTER TABLE ONLY %s\n    ADD CONSTRAINT (?P<name>%s) (?P<kind>PRIMARY KEY|UNIQUE) \((?P<columns>[^;()\n]+)\);"
    % (_TABLE, _IDENT))
_PARTITIONED_RE = re.compile(rb"^CREATE TABLE %s \(\n.*?^\)\nPARTITION BY " % _TABLE, re.S | re.M)


@dataclass(frozen=True)
class Entry:
    """One piece of the dump's SQL: an entry as pg_dump wrote it (its header and SQL), and the session
    settings written after it, which hold for every later entry."""

    kind: str | None  # pg_dump's type ("INDEX", "FK CONSTRAINT", ...); None for text before the first header
    text: bytes
    settings: tuple[bytes, ...] = ()

    @property
    def sql(self) -> bytes:
        """The statements without comment lines and blank lines (what the classification looks at)."""
        return b"\n".join(line for line in self.text.split(b"\n") if line.strip() and not line.startswith(b"--"))


def dump_entries(text: bytes) -> list[Entry]:
    """The text cut at pg_dump's entry headers (at the top level: never inside a string or a function body);
    each entry's trailing session settings set apart."""
    masked = Mask().feed(text)
    starts = [m.start() for m in _ENTRY_HEADER_RE.finditer(masked)]
    bounds = [0, *starts] if not starts or starts[0] else starts
    entries = []
    for begin, end in zip(bounds, [*bounds[1:], len(text)], strict=True):
        header = _ENTRY_HEADER_RE.match(text, begin)
        body, settings = _trailing_settings(text[begin:end], masked[begin:end])
        entries.append(Entry(header["type"].decode() if header else None, body, settings))
    return entries


def _trailing_settings(text: bytes, masked: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """(the text without the SET lines at its end, those lines): a session setting is a whole line at the top
    level at an entry's end (a line of a string or a function body never is)."""
    lines, shapes = text.split(b"\n"), masked.split(b"\n")
    found: list[bytes] = []
    cut = len(lines)
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if not line.strip():
            continue
        at_top_level = shapes[index][:4] == line[:4]  # a line inside a string or a body is masked from its start
        setting = _SETTING_RE.fullmatch(line) if at_top_level else None
        if setting is None or (setting["name"] or setting["config"]) not in SESSION_SETTINGS:
            break
        found.insert(0, line)
        cut = index
    if not found:
        return text, ()
    return b"\n".join(lines[:cut]) + b"\n", tuple(found)


def setting_name(line: bytes) -> bytes:
    found = _SETTING_RE.fullmatch(line)
    return (found["name"] or found["config"]) if found else line


def partitioned_tables(entries: list[Entry]) -> set[bytes]:
    """The partitioned tables the schema creates (their keys are left as pg_dump wrote them)."""
    return {found["table"] for entry in entries if entry.kind == "TABLE"
            and (found := _PARTITIONED_RE.search(entry.sql))}


def key_as_index(entry: Entry, partitioned: set[bytes]) -> tuple[bytes, bytes, bytes] | None:
    """A primary key or unique constraint split in two: its unique index, which builds beside the table's other
    indexes (``ADD CONSTRAINT`` would lock the table while it builds), then the constraint taking that index,
    which is what ``ADD CONSTRAINT`` makes. (table, CREATE UNIQUE INDEX, ALTER TABLE) or None: keep the entry.

    Only the plainest form (no INCLUDE, WITH, tablespace, DEFERRABLE or NULLS clause) of an ordinary table."""
    found = _PLAIN_KEY_RE.fullmatch(entry.sql) if entry.kind == "CONSTRAINT" else None
    if found is None or found["table"] in partitioned:
        return None
    table, name = found["table"], found["name"]
    create = b"CREATE UNIQUE INDEX %s ON %s USING btree (%s);" % (name, table, found["columns"])
    attach = b"ALTER TABLE ONLY %s\n    ADD CONSTRAINT %s %s USING INDEX %s;" % (table, name, found["kind"], name)
    return table, create, attach


def lock_plan(entry: Entry) -> dict[bytes, str] | None:
    """The tables a post-data entry works on, and how, when it may run beside other work; None when it
    must run alone, in dump order (anything not recognised).

    ``index``: a CREATE INDEX (several may build on one table at once); ``exclusive``: a constraint that
    locks its table(s) (an ALTER TABLE). {}: touches no table (a sequence's value)."""
    sql = entry.sql
    if entry.kind == "INDEX" and (found := _INDEX_RE.fullmatch(sql)):
        return {found["table"]: "index"}
    if entry.kind == "CONSTRAINT" and (found := _CONSTRAINT_RE.fullmatch(sql)):
        return {found["table"]: "exclusive"}
    if entry.kind == "FK CONSTRAINT" and (found := _FOREIGN_KEY_RE.fullmatch(sql)):
        return {found["table"]: "exclusive", found["ref"]: "exclusive"}
    if entry.kind == "SEQUENCE SET" and _SETVAL_RE.fullmatch(sql):
        return {}
    return None
