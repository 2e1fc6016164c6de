"""Some tables out of a plain SQL dump, moved into another schema: their DDL, data, indexes and constraints.

A plain dump (pg_dump's SQL, or what ``pg_restore -f -`` prints for the other formats) is a sequence of
entries, each after a ``-- Name: …; Type: …; Schema: …`` header. One pass over it keeps the entries that act
on the wanted tables (and the sequences they own), parses each statement with PostgreSQL's own parser
(pglast), points every reference to a wanted table or sequence at the side schema, and hands the statements
and each wanted table's COPY data to the caller. Other tables' data is skipped without being parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from ansible.module_utils.lint_walk import nodes
from ansible.module_utils.sql_text import split_statements

_HEADER = re.compile(rb"^-- (?:Data for )?Name: (?P<name>.*?); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>[^;]*);")
_COPY_END = b"\\.\n"


class Entry:
    """One entry of the dump: its header and its SQL (for TABLE DATA: the COPY statement)."""

    def __init__(self, name: str, kind: str, schema: str) -> None:
        self.name, self.kind, self.schema = name, kind, schema
        self.lines: list[bytes] = []

    @property
    def sql(self) -> str:
        return b"".join(self.lines).decode("utf-8")


def entries(stream, on_data: Callable[[Entry, Iterator[bytes]], None]) -> Iterator[Entry]:
    """The dump's entries in order, the preamble first (kind ``PREAMBLE``). A TABLE DATA entry's rows go to
    ``on_data(entry, rows)``, which may read them (rows end before ``\\.``) or not (they are then skipped)."""
    current = Entry("", "PREAMBLE", "")
    for line in stream:
        if line.startswith(b"\\") and not line.startswith(b"\\."):  # psql meta-commands (\restrict, \connect)
            continue
        header = _HEADER.match(line) if line.startswith(b"-- ") else None
        if header:
            yield current
            current = Entry(*(header.group(g).decode("utf-8").strip() for g in ("name", "type", "schema")))
            continue
        if line.startswith(b"COPY ") and current.kind == "TABLE DATA":
            current.lines.append(line)
            rows = _rows(stream)
            on_data(current, rows)
            for _ in rows:  # whatever on_data left unread
                pass
            continue
        if not line.startswith(b"--"):
            current.lines.append(line)
    yield current


def _rows(stream) -> Iterator[bytes]:
    for line in stream:
        if line == _COPY_END:
            return
        yield line


class SideSchema:
    """Points the wanted tables (and the sequences they own) at a side schema in parsed statements."""

    def __init__(self, tables: set[tuple[str, str]], side: str) -> None:
        self.tables = set(tables)
        self.sequences: set[tuple[str, str]] = set()
        self.side = side

    def _wanted(self, schema: str | None, name: str | None) -> bool:
        return (schema or "public", name) in self.tables | self.sequences

    def takes(self, entry: Entry, statements: list[Any]) -> bool:
        """Whether the entry acts on a wanted table or sequence (an OWNED BY makes its sequence wanted). A
        foreign key of another table that references a wanted one is not taken (it is that table's)."""
        from pglast import ast

        for stmt in statements:
            if isinstance(stmt, ast.AlterSeqStmt | ast.CreateSeqStmt):
                owner = _owned_by(stmt)
                if owner and (owner[0], owner[1]) in self.tables:
                    self.sequences.add((stmt.sequence.schemaname or "public", stmt.sequence.relname))
        if entry.kind == "SEQUENCE SET":
            return (entry.schema, entry.name) in self.sequences
        return any(self._wanted(schema, name) for stmt in statements for schema, name in _acts_on(stmt))

    def rewrite(self, stmt: Any) -> str:
        from pglast import ast
        from pglast.stream import RawStream

        for node in nodes(stmt):
            if isinstance(node, ast.RangeVar) and self._wanted(node.schemaname, node.relname):
                node.schemaname = self.side
            elif isinstance(node, ast.String) and node.sval:
                node.sval = self._qualified_string(node.sval)
        for names in _name_lists(stmt):  # COMMENT ON TABLE/COLUMN s.t[.c], OWNED BY s.t.c
            if len(names) >= 2 and self._wanted(names[0].sval, names[1].sval):
                names[0].sval = self.side
        return RawStream()(stmt)

    def _qualified_string(self, text: str) -> str:
        """'public.users_id_seq' (in nextval, setval) pointed at the side schema when it names a wanted one."""
        parts = [p.strip('"') for p in text.split(".")]
        if len(parts) == 2 and self._wanted(parts[0], parts[1]):
            return f'"{self.side}".{text.split(".", 1)[1]}'
        return text


def _name_lists(stmt: Any) -> list[list[Any]]:
    """The qualified names written as lists of String nodes: a COMMENT's object, an OWNED BY."""
    from pglast import ast

    lists = []
    if isinstance(stmt, ast.CommentStmt) and isinstance(stmt.object, tuple | list):
        lists.append(list(stmt.object))
    if isinstance(stmt, ast.AlterSeqStmt | ast.CreateSeqStmt):
        lists += [list(o.arg) for o in stmt.options or () if o.defname == "owned_by" and len(o.arg) >= 3]
    return [[n for n in names if isinstance(n, ast.String)] for names in lists]


def _owned_by(stmt: Any) -> tuple[str, ...] | None:
    for option in stmt.options or ():
        if option.defname == "owned_by":
            names = [getattr(p, "sval", "") for p in option.arg]
            return tuple(names[-3:-1]) if len(names) >= 3 else ("public", names[0]) if len(names) == 2 else None
    return None


def _acts_on(stmt: Any) -> list[tuple[str | None, str]]:
    """The relations a statement is about (not the ones it merely references, like a foreign key's target)."""
    from pglast import ast

    found = []
    for attribute in ("relation", "sequence", "table"):
        rv = getattr(stmt, attribute, None)
        if isinstance(rv, ast.RangeVar):
            found.append((rv.schemaname, rv.relname))
    if isinstance(stmt, ast.GrantStmt):
        found += [(rv.schemaname, rv.relname) for rv in stmt.objects or () if isinstance(rv, ast.RangeVar)]
    if isinstance(stmt, ast.CreateStatsStmt):
        found += [(rv.schemaname, rv.relname) for rv in stmt.relations or () if isinstance(rv, ast.RangeVar)]
    for names in _name_lists(stmt):
        if len(names) >= 2 and isinstance(stmt, ast.CommentStmt):
            found.append((names[0].sval, names[1].sval))
    return found


def parsed(sql: str) -> list[Any]:
    """Each statement of an entry's SQL, parsed (the entries pg_dump writes always parse)."""
    from pglast import parse_sql

    return [raw.stmt for text in split_statements(sql) for raw in parse_sql(text)]
