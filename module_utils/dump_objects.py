"""Some tables out of a plain SQL dump, moved into another schema: their DDL, data, indexes and constraints.

A plain dump (pg_dump's SQL, or what ``pg_restore -f -`` prints for the other formats) is a sequence of
entries, each after a ``-- Name: …; Type: …; Schema: …`` header. One pass over it keeps the entries that act
on the wanted tables (and the sequences they own), parses each statement with PostgreSQL's own parser
(pglast), points every reference to a wanted table or sequence at the side schema, and hands the statements
and each wanted table's COPY data to the caller. Other tables' data is skipped without being parsed. A rewritten
statement that would still act on an object outside the side schema (a live table, a live sequence's value) is
refused (``Refused``) before it runs. Names are read as PostgreSQL reads them (``split_name``: quotes, ``""``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from ansible.module_utils.lint_walk import nodes
from ansible.module_utils.sql_text import split_statements

_HEADER = re.compile(rb"^-- (?:Data for )?Name: (?P<name>.*?); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>[^;]*);")
_COPY_END = b"\\.\n"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SIMPLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_SEQUENCE_FUNCTIONS = {"setval", "nextval", "currval"}
# What a table's entries hold: anything else in a wanted entry is refused, not run.
_CONFINABLE = {"CreateStmt", "AlterTableStmt", "IndexStmt", "CreateSeqStmt", "AlterSeqStmt", "CommentStmt", "GrantStmt",
               "CreateTrigStmt", "CreatePolicyStmt", "RuleStmt", "SelectStmt", "CopyStmt", "CreateStatsStmt"}


class Refused(ValueError):
    """A statement of the side load that would act on an object outside the side schema: never run."""


def split_name(text: str) -> list[str]:
    """A (qualified) name as PostgreSQL reads one (an identifier list, a regclass string): parts split at dots
    outside double quotes, ``""`` inside quotes un-escaped, unquoted parts folded to lower case. ValueError when
    it is not a name."""
    parts, i, n = [], 0, len(text)
    while True:
        i = _skip_spaces(text, i)
        if text[i:i + 1] == '"':
            part, i = _quoted_part(text, i)
        else:
            start = i
            while i < n and text[i] not in '."' and not text[i].isspace():
                i += 1
            part = text[start:i].translate(_ASCII_LOWER)
        if not part:
            raise ValueError(f"{text!r} is not a table name (an empty part)")
        parts.append(part)
        i = _skip_spaces(text, i)
        if i == n:
            return parts
        if text[i] != ".":
            raise ValueError(f"{text!r} is not a table name (quote a name holding {text[i]!r})")
        i += 1


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _quoted_part(text: str, i: int) -> tuple[str, int]:
    """The quoted identifier starting at text[i] (a double quote), un-escaped, and where it ends."""
    out, j = [], i + 1
    while True:
        k = text.find('"', j)
        if k < 0:
            raise ValueError(f"{text!r} is not a table name (an unterminated quote)")
        out.append(text[j:k])
        if text[k + 1:k + 2] != '"':
            return "".join(out), k + 1
        out.append('"')
        j = k + 2


def quote_ident(name: str) -> str:
    """An identifier as PostgreSQL's quote_ident writes it (quoted only when it must be)."""
    from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

    keyword = name in RESERVED_KEYWORDS | TYPE_FUNC_NAME_KEYWORDS | COL_NAME_KEYWORDS
    return name if _SIMPLE_NAME.fullmatch(name) and not keyword else '"' + name.replace('"', '""') + '"'


def table_name(schema: str, table: str) -> str:
    """A table as the module names it: bare in public, else schema-qualified; quoted as quote_ident would."""
    return quote_ident(table) if schema == "public" else f"{quote_ident(schema)}.{quote_ident(table)}"


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
    """Points the wanted tables (and the sequences they own) at a side schema in parsed statements, and refuses a
    statement that would still act on anything outside it."""

    def __init__(self, tables: set[tuple[str, str]], side: str) -> None:
        self.tables = set(tables)
        self.sequences: set[tuple[str, str]] = set()
        self.side = side

    def _wanted(self, schema: str | None, name: str | None) -> bool:
        return (schema or "public", name) in self.tables | self.sequences

    def takes(self, entry: Entry, statements: list[Any]) -> bool:
        """Whether the entry acts on a wanted table or sequence (an OWNED BY, or an identity column's SEQUENCE
        NAME, makes its sequence wanted). A foreign key of another table that references a wanted one is not
        taken (it is that table's)."""
        from pglast import ast

        for stmt in statements:
            if isinstance(stmt, ast.AlterSeqStmt | ast.CreateSeqStmt):
                owner = _owned_by(stmt)
                if owner and (owner[0], owner[1]) in self.tables:
                    self.sequences.add((stmt.sequence.schemaname or "public", stmt.sequence.relname))
            rv = getattr(stmt, "relation", None)
            if isinstance(rv, ast.RangeVar) and (rv.schemaname or "public", rv.relname) in self.tables:
                self.sequences |= {_pair(names) for names in _identity_sequences(stmt)}
        if entry.kind == "SEQUENCE SET":
            return any(_pair(split_name(text)) in self.sequences for _, text in _sequence_strings(statements))
        return any(self._wanted(schema, name) for stmt in statements for schema, name in _acts_on(stmt))

    def rewrite(self, stmt: Any) -> str:
        """The statement pointed at the side schema, as SQL; Refused when it would still act outside it."""
        from pglast import ast
        from pglast.stream import RawStream

        for node in nodes(stmt):
            if isinstance(node, ast.RangeVar) and self._wanted(node.schemaname, node.relname):
                node.schemaname = self.side
        for const, text in _sequence_strings([stmt]):  # nextval('public.users_id_seq'), setval, '…'::regclass
            const.sval = self._qualified_string(text)
        for names in _name_lists(stmt) + [n for n in _identity_sequences(stmt) if len(n) == 2]:
            if len(names) >= 2 and self._wanted(names[0].sval, names[1].sval):
                names[0].sval = self.side
        self._confine(stmt)
        return RawStream()(stmt)

    def session(self, stmt: Any) -> str:
        """A preamble statement (the dump's session settings) as SQL; Refused when it is anything else."""
        from pglast import ast
        from pglast.stream import RawStream

        calls = [n for n in nodes(stmt) if isinstance(n, ast.FuncCall)]
        if isinstance(stmt, ast.VariableSetStmt) or (isinstance(stmt, ast.SelectStmt) and calls and all(
                _function(c) == "set_config" for c in calls)):
            return RawStream()(stmt)
        raise Refused(f"the dump's preamble holds a statement that is not a session setting: {RawStream()(stmt)}")

    def _qualified_string(self, text: str) -> str:
        """'public.users_id_seq' (in nextval, setval) pointed at the side schema when it names a wanted one."""
        try:
            parts = split_name(text)
        except ValueError:
            return text
        if self._wanted(*_pair(parts)):
            return f"{quote_ident(self.side)}.{quote_ident(parts[-1])}"
        return text

    def _confine(self, stmt: Any) -> None:
        """Refused unless everything the statement acts on is in the side schema (see _outside)."""
        from pglast.stream import RawStream

        kind = type(stmt).__name__
        outside = [f"a {kind}"] if kind not in _CONFINABLE else _outside(stmt, self.side)
        if outside:
            raise Refused(f"refused before it ran, as it would act on {', '.join(outside)} outside the side schema "
                          f"{self.side}: {RawStream()(stmt)[:300]}")


def _pair(parts: list[Any]) -> tuple[str, str]:
    """(schema, name) of a name's parts (strings or String nodes); schema public when unqualified."""
    names = [getattr(p, "sval", p) for p in parts]
    return (names[-2] if len(names) > 1 else "public", names[-1])


def _function(call: Any) -> str:
    return getattr(call.funcname[-1], "sval", "") if call.funcname else ""


def _sequence_strings(statements: list[Any]) -> list[tuple[Any, str]]:
    """The string constants that name a sequence or relation: a sequence function's first argument, a string
    cast to regclass; as (String node, text)."""
    from pglast import ast

    found = []
    for node in nodes(list(statements)):
        arg = None
        if isinstance(node, ast.FuncCall) and _function(node) in _SEQUENCE_FUNCTIONS and node.args:
            arg = node.args[0]
        elif isinstance(node, ast.TypeCast) and node.typeName and getattr(
                node.typeName.names[-1], "sval", "") == "regclass":
            arg = node.arg
        while isinstance(arg, ast.TypeCast):
            arg = arg.arg
        if isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String):
            found.append((arg.val, arg.val.sval))
    unique = {id(const): (const, text) for const, text in found}
    return list(unique.values())


def _identity_sequences(stmt: Any) -> list[list[Any]]:
    """An identity column's SEQUENCE NAME (ADD GENERATED … AS IDENTITY, or in CREATE TABLE), as String lists."""
    from pglast import ast

    return [[n for n in node.arg if isinstance(n, ast.String)] for node in nodes(stmt)
            if isinstance(node, ast.DefElem) and node.defname == "sequence_name" and isinstance(node.arg, tuple | list)]


def _outside(stmt: Any, side: str) -> list[str]:
    """What the statement acts on outside ``side``: a relation it names (not a foreign key's target, nor one a
    rule's actions or a policy's expression read), an object name (comment, OWNED BY, identity or statistics),
    a sequence whose value it sets."""
    from pglast import ast

    exempt = {id(n.pktable) for n in nodes(stmt) if isinstance(n, ast.Constraint) and n.pktable is not None}
    for attribute in ("actions", "whereClause", "qual", "with_check"):
        if isinstance(stmt, ast.RuleStmt | ast.CreatePolicyStmt) and getattr(stmt, attribute, None) is not None:
            exempt |= {id(n) for n in nodes(getattr(stmt, attribute))}
    out = [f"{rv.schemaname or '(search_path)'}.{rv.relname}" for rv in nodes(stmt)
           if isinstance(rv, ast.RangeVar) and id(rv) not in exempt and rv.schemaname != side]
    names = _name_lists(stmt) + _identity_sequences(stmt)
    if isinstance(stmt, ast.CreateStatsStmt):
        names.append([n for n in stmt.defnames or () if isinstance(n, ast.String)])
    out += [".".join(n.sval for n in ns) for ns in names if len(ns) < 2 or ns[0].sval != side]
    set_here = {id(n) for call in nodes(stmt) if isinstance(call, ast.FuncCall) and _function(call) == "setval"
                and call.args for n in nodes(call.args[0])}
    out += [f"the value of sequence {text}" for const, text in _sequence_strings([stmt])
            if id(const) in set_here and _safe_pair(text)[0] != side]
    if isinstance(stmt, ast.SelectStmt) and not _only_setval(stmt):
        out.append("a query")
    return out


def _safe_pair(text: str) -> tuple[str, str]:
    try:
        return _pair(split_name(text))
    except ValueError:
        return ("", text)


def _only_setval(stmt: Any) -> bool:
    from pglast import ast

    targets = [t.val for t in stmt.targetList or ()]
    return bool(targets) and stmt.fromClause is None and all(
        isinstance(t, ast.FuncCall) and _function(t) == "setval" for t in targets)


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
