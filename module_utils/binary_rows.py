"""The ``binary`` backup format: big tables' rows in PostgreSQL's binary COPY format, the rest as pg_dump wrote it.

A server loads binary COPY rows much faster than text ones (parsing text is most of a text COPY's CPU; see
docs/decisions.md), and pg_dump writes only text. So a ``binary`` backup is a directory, all of it taken in
one snapshot (pg_dump's ``--snapshot``, exported by a session that holds it until the end):

- ``schema.sql.gz``: ``pg_dump --section=pre-data`` (tables, types, functions: what the rows need);
- ``data.sql.gz``: ``pg_dump --section=data --section=post-data`` without the big tables' rows (small tables'
  rows as text, sequences, then indexes, constraints, triggers, grants);
- ``rows/NNNN.copy.gz``: a big table's rows, one file per range of its pages (the pieces load side by side),
  ``COPY (SELECT columns FROM ONLY table ...) TO STDOUT (FORMAT binary)``;
- ``rows.json``: which table and columns each file holds (what the restore reads);
- ``rows.psql``: the same as psql ``\\copy`` lines, for a restore by hand with psql and gzip only::

      cd BACKUP.bin && { gunzip -c schema.sql.gz; cat rows.psql; gunzip -c data.sql.gz; } \\
          | psql -X -v ON_ERROR_STOP=1 --single-transaction -d TARGET

A table is dumped in binary only when it is big enough to matter and every column's type has a binary form
that means the same in another database and reads back whatever it holds: built-in types, their arrays,
built-in ranges, enums (sent as their label) and domains over those, less the few listed at ``_SAFE_TYPE``.
Anything else (a composite or an extension's type, an array of an enum: their binary form carries OIDs) stays
text, in ``data.sql.gz``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.operator_error import OperatorError

SCHEMA_FILE = "schema.sql.gz"
DATA_FILE = "data.sql.gz"
ROWS_DIR = "rows"
ROWS_INDEX = "rows.json"
ROWS_SCRIPT = "rows.psql"
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"  # how every binary COPY stream starts
TRAILER = b"\xff\xff"  # ... and ends (a field count of -1)
MIN_TABLE_BYTES = 8 << 20  # smaller tables stay text: their rows load in moments either way
PIECE_BYTES = 64 << 20  # pages of a big table per file (the restore loads the pieces side by side)
_PAGE = 8192

# Columns' types whose binary form means the same in any database and reads back whatever it holds. A domain
# is judged by its base type (b: the type itself, or the domain's base), an array by its element (e).
# FirstNormalObjectId (16384): below it, the types every PostgreSQL has under the same OID. Left out: the reg*
# types (their binary form is an OID), types without a binary form (aclitem, cstring, gtsvector), int2vector and
# oidvector (an empty one does not read back), tsquery (neither does an empty one, in some releases), xml (its
# binary form adds an encoding declaration), and every array whose element is not a safe type (an enum's
# array carries the enum's OID).
_UNSAFE_NAMES = "'^_?(reg.*|int2vector|oidvector|tsquery|xml|aclitem|cstring|gtsvector)$'"
_SAFE_BUILTIN = """({x}.oid < 16384 AND {x}.typtype IN ('b', 'r', 'm') AND {x}.typsend <> 0 AND {x}.typreceive <> 0
                   AND {x}.typname !~ """ + _UNSAFE_NAMES + ")"
_SAFE_TYPE = f"""
    b.typtype = 'e'
    OR {_SAFE_BUILTIN.format(x="b")}
       AND (b.typelem = 0 OR b.typlen <> -1 OR {_SAFE_BUILTIN.format(x="e")})
"""


def _quoted(expr: str) -> str:
    """SQL that quotes a name always (a later release may reserve a word this server leaves bare)."""
    return f"""('"' || replace({expr}, '"', '""') || '"')"""


# The tables pg_dump dumps rows of (ordinary tables, not an extension's), at least min_bytes big, with their
# columns (not dropped, not generated), every name quoted, and whether every column's type is safe.
CANDIDATES_SQL = f"""
SELECT c.oid, {_quoted("n.nspname")} || '.' || {_quoted("c.relname")}, pg_relation_size(c.oid),
       c.reltuples, c.relpages,
       ARRAY(SELECT {_quoted("a.attname")} FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY a.attnum),
       NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                   JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
                   LEFT JOIN pg_type e ON e.oid = b.typelem
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                     AND NOT coalesce(({_SAFE_TYPE}), false))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
  AND pg_relation_size(c.oid) >= %s
ORDER BY pg_relation_size(c.oid) DESC, c.oid
"""


@dataclass
class BinaryTable:
    """A table whose rows go in binary: its name and columns as PostgreSQL quotes them, its files."""

    name: str  # schema.table, quoted as needed
    columns: list[str]
    bytes: int = 0
    estimated_rows: float = 0.0
    files: list[str] = field(default_factory=list)
    pieces: list[tuple[int, int | None]] = field(default_factory=list)  # page ranges (start, end or None)

    @property
    def column_list(self) -> str:
        return f" ({', '.join(self.columns)})" if self.columns else ""

    def select(self, piece: tuple[int, int | None]) -> str:
        """The query one file's rows come from (a range of pages: a TID range scan, PostgreSQL 14+)."""
        start, end = piece
        where = []
        if start:
            where.append(f"ctid >= '({start},0)'::tid")
        if end is not None:
            where.append(f"ctid < '({end},0)'::tid")
        columns = ", ".join(self.columns)
        return (f"COPY (SELECT {columns} FROM ONLY {self.name}{' WHERE ' + ' AND '.join(where) if where else ''}) "
                "TO STDOUT (FORMAT binary)")

    @property
    def copy_in(self) -> str:
        return f"COPY {self.name}{self.column_list} FROM STDIN (FORMAT binary)"


def _plain_name(text: str) -> bool:
    """A quoted name that fits on one line of a psql script and of a pg_dump pattern."""
    return not any(ord(ch) < 32 or ch == "\x7f" for ch in text)


def choose_tables(cur, min_bytes: int = MIN_TABLE_BYTES, piece_bytes: int = PIECE_BYTES,
                  server_version: int = 160000, encoding: str = "UTF8") -> list[BinaryTable]:
    """The tables to dump in binary, each cut into page ranges of about ``piece_bytes`` (one range before
    PostgreSQL 14, which cannot scan a range of pages). In a database not in UTF8, only tables whose names are
    ASCII (the commands naming them are UTF-8 text)."""
    query = CANDIDATES_SQL if server_version >= 120000 else CANDIDATES_SQL.replace("a.attgenerated = ''", "true")
    split = server_version >= 140000
    cur.execute(query, (min_bytes,))
    tables = []
    for _oid, name, size, reltuples, _relpages, columns, safe in cur.fetchall():
        if not safe or not _plain_name(name) or not all(_plain_name(c) for c in columns):
            continue
        if encoding != "UTF8" and not all(text.isascii() for text in (name, *columns)):
            continue
        pages = -(-int(size) // _PAGE)
        step = max(1, piece_bytes // _PAGE)
        if split and pages > step:
            starts = list(range(0, pages, step))
            pieces = [(s, s + step) for s in starts[:-1]] + [(starts[-1], None)]
        else:
            pieces = [(0, None)]
        tables.append(BinaryTable(name, list(columns), int(size), max(float(reltuples), 0.0), pieces=pieces))
    return tables


def exclude_pattern(name: str) -> str:
    """The pg_dump pattern that matches exactly this (quoted) table name."""
    parts = split_quoted(name)
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def split_quoted(name: str) -> list[str]:
    """``"my schema".t`` -> ['my schema', 't'] (the inverse of quote_ident on each part)."""
    parts, pos = [], 0
    while pos <= len(name):
        if name.startswith('"', pos):
            end, text = pos + 1, []
            while True:
                quote = name.index('"', end)
                text.append(name[end:quote])
                if name.startswith('"', quote + 1):
                    text.append('"')
                    end = quote + 2
                    continue
                pos = quote + 1
                break
            parts.append("".join(text))
        else:
            dot = name.find(".", pos)
            dot = len(name) if dot < 0 else dot
            parts.append(name[pos:dot])
            pos = dot
        if pos >= len(name) or name[pos] != ".":
            break
        pos += 1
    return parts


def rows_index(tables: list[BinaryTable], encoding: str) -> dict[str, Any]:
    return {"format": "binary COPY", "client_encoding": encoding,
            "tables": [{"table": t.name, "columns": t.columns, "files": t.files, "bytes": t.bytes,
                        "estimated_rows": t.estimated_rows} for t in tables]}


def rows_script(tables: list[BinaryTable], encoding: str) -> str:
    """psql lines loading every file (paths relative to the backup directory)."""
    lines = ["-- The big tables' rows of this backup, in PostgreSQL's binary COPY format (see rows.json).",
             f"SET client_encoding = '{encoding}';"]
    for table in tables:
        for path in table.files:
            lines.append(f"\\copy {table.name}{table.column_list} FROM PROGRAM 'gzip -dc {path}' WITH (FORMAT binary)")
    return "\n".join(lines) + "\n"


@dataclass
class BinaryRows:
    """A binary backup's rows, as its rows.json says (read by the restore)."""

    root: Path
    encoding: str
    tables: list[BinaryTable]


_FILE_RE = re.compile(r"rows/\d{4,}\.copy\.gz")
# A name as quote_ident writes it: "any text, quotes doubled" or a plain lower-case identifier.
_IDENT = r'(?:"(?:[^"]|"")+"|[a-z_\x80-\U0010ffff][a-z0-9_$\x80-\U0010ffff]*)'
_IDENT_RE = re.compile(_IDENT)
_QUALIFIED_RE = re.compile(rf"{_IDENT}\.{_IDENT}")
_ENCODING_RE = re.compile(r"[A-Za-z0-9_]+")


def read_rows(root: Path) -> BinaryRows:
    """rows.json of the backup at ``root``, checked: every file it names is one of the backup's row files."""
    path = root / ROWS_INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        encoding = str(data["client_encoding"])
        tables = [BinaryTable(str(t["table"]), [str(c) for c in t["columns"]], int(t.get("bytes") or 0),
                              float(t.get("estimated_rows") or 0.0), files=[str(f) for f in t["files"]])
                  for t in data["tables"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OperatorError(f"Cannot read {path}: {exc}.",
                            "The backup is incomplete or not a pg_backup binary backup; restore another one.") from None
    bad = [f for t in tables for f in t.files if not _FILE_RE.fullmatch(f) or not (root / f).is_file()]
    bad += [t.name for t in tables if not _QUALIFIED_RE.fullmatch(t.name) or not _plain_name(t.name)]
    bad += [c for t in tables for c in t.columns if not _IDENT_RE.fullmatch(c) or not _plain_name(c)]
    if bad or not _ENCODING_RE.fullmatch(encoding):
        raise OperatorError(f"{path} names files, tables or columns that are not this backup's: "
                            f"{', '.join(bad[:3]) or encoding}.",
                            "Restore another backup; this one was changed after it was written.")
    return BinaryRows(root, encoding, tables)


def verify_binary(root: Path) -> None:
    """Read the whole backup back: both pg_dump files decode and end with pg_dump's completion marker, every rows
    file decodes to a whole binary COPY stream."""
    from ansible.module_utils.fast_gzip import open_read
    from ansible.module_utils.plain_dump import verify_plain

    verify_plain(root / SCHEMA_FILE, compressed=True)
    verify_plain(root / DATA_FILE, compressed=True)
    for path in sorted((root / ROWS_DIR).iterdir()):
        head, tail = b"", b""
        try:
            with open_read(path) as handle:
                while chunk := handle.read(1 << 20):
                    head = head or chunk[:len(SIGNATURE)]
                    tail = (tail + chunk)[-2:]
        except Exception as exc:  # noqa: BLE001 - zlib, ISA-L and gzip each raise their own error types
            raise OperatorError(f"Verification failed: {path.name} does not decompress: {exc}.",
                                "Take another backup; check free disk space.") from None
        if not head.startswith(SIGNATURE) or tail != TRAILER:
            raise OperatorError(f"Verification failed: {path.name} is not a whole binary COPY stream.",
                                "Take another backup; check free disk space.")
