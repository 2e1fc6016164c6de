"""The schema of a database as plain JSON, and the differences between two such snapshots.

The snapshot covers non-system schemas: tables (columns with type, nullability, default, identity and
generation; indexes; constraints), views, sequences and enum types, without objects owned by extensions.
It is sorted and stable, so it survives an Ansible ``register`` and can be handed back later as
``expected_schema``. :func:`diff_schemas` is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_catalog import NOT_FROM_EXTENSION, USER_SCHEMA, qualified

SNAPSHOT_FORMAT = 1
_CONSTRAINT_TYPES = {
    "p": "PRIMARY KEY", "f": "FOREIGN KEY", "u": "UNIQUE", "c": "CHECK", "x": "EXCLUDE", "t": "TRIGGER",
}
_IDENTITY = {"a": "always", "d": "by default"}
_GENERATED = {"s": "stored", "v": "virtual"}


# --- the difference between two snapshots (pure) ---------------------------------------------------

def _null(nullable: Any) -> str:
    return "NULL" if nullable else "NOT NULL"


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def _column_text(col: dict) -> str:
    text = f"{col.get('type')} {_null(col.get('nullable'))}"
    if col.get("default") is not None:
        text += f" DEFAULT {col['default']}"
    return text


def _schema_prefix(table: str) -> str:
    return table.rsplit(".", 1)[0] + "." if "." in table else ""


def _each(live: dict, expected: dict, kind: str, out: list[str], detail: Callable[[Any], str] | None = None,
          both: Callable[[str, Any, Any], None] | None = None) -> None:
    """Report names only in one side; hand names on both sides to ``both``."""
    for name in sorted(set(live) | set(expected)):
        if name not in live:
            out.append(f"{kind} {name} missing" + (f" ({detail(expected[name])})" if detail else ""))
        elif name not in expected:
            out.append(f"{kind} {name} only in live" + (f" ({detail(live[name])})" if detail else ""))
        elif both is not None:
            both(name, live[name], expected[name])


def _diff_attributes(label: str, live: dict, expected: dict, fields: Iterable[str], out: list[str],
                     show: Callable[[str, Any], str] | None = None) -> None:
    for field in fields:
        a, b = live.get(field), expected.get(field)
        if a != b:
            shown = show or (lambda _f, v: _shown(v))
            out.append(f"{label}: {field} differs (live {shown(field, a)}, expected {shown(field, b)})")


def _show_column_field(field: str, value: Any) -> str:
    return _null(value) if field == "nullable" else _shown(value)


def _diff_table(table: str, live: dict, expected: dict, out: list[str]) -> None:
    def column(name: str, a: dict, b: dict) -> None:
        _diff_attributes(f"column {name}", a, b, ("type", "nullable", "default", "identity", "generated"),
                         out, _show_column_field)

    _each(_keyed(f"{table}.", live.get("columns")), _keyed(f"{table}.", expected.get("columns")), "column", out,
          _column_text, column)

    def index(name: str, a: str, b: str) -> None:
        if a != b:
            out.append(f"index {name} differs (live {a}; expected {b})")

    # Index names are unique per schema: name them with the schema, not the table.
    prefix = _schema_prefix(table)
    _each(_keyed(prefix, live.get("indexes")), _keyed(prefix, expected.get("indexes")), "index", out, str, index)

    def constraint(name: str, a: dict, b: dict) -> None:
        if a.get("definition") != b.get("definition"):
            out.append(f"constraint {name} differs (live {a.get('definition')}; expected {b.get('definition')})")
        elif a.get("type") != b.get("type"):
            out.append(f"constraint {name}: type differs (live {a.get('type')}, expected {b.get('type')})")

    _each(_keyed(f"{table}.", live.get("constraints")), _keyed(f"{table}.", expected.get("constraints")),
          "constraint", out, lambda c: str(c.get("definition")), constraint)


def _keyed(prefix: str, items: dict | None) -> dict:
    return {prefix + name: value for name, value in (items or {}).items()}


def check_snapshot(snapshot: Any, what: str = "expected_schema") -> dict:
    """The snapshot if it looks like one of ours, else an OperatorError naming what is wrong."""
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("tables"), dict):
        raise OperatorError(
            f"{what} is not a schema snapshot: it has no 'tables' mapping.",
            "Pass the 'schema' value returned by an earlier pg_inspect run with schema: true.",
        )
    if snapshot.get("format", SNAPSHOT_FORMAT) != SNAPSHOT_FORMAT:
        raise OperatorError(
            f"{what} has snapshot format {snapshot.get('format')!r}; this module reads format {SNAPSHOT_FORMAT}.",
            "Take the snapshot again with this version of pg_inspect.",
        )
    return snapshot


def diff_schemas(live: dict, expected: dict) -> list[str]:
    """Human-readable differences between two schema snapshots; [] when they are equal.

    ``live`` is the database inspected, ``expected`` the reference (another database or an
    earlier snapshot). "missing" means in expected but not in live; "only in live" the reverse.
    """
    out: list[str] = []
    live_tables, expected_tables = live.get("tables", {}), expected.get("tables", {})
    _each(live_tables, expected_tables, "table", out,
          both=lambda name, a, b: _diff_table(name, a, b, out))

    def view(name: str, a: dict, b: dict) -> None:
        if a.get("kind") != b.get("kind"):
            out.append(f"view {name}: kind differs (live {a.get('kind')}, expected {b.get('kind')})")
        elif a.get("definition") != b.get("definition"):
            out.append(f"view {name}: definition differs (live {a.get('definition')}; expected {b.get('definition')})")

    _each(live.get("views", {}), expected.get("views", {}), "view", out, both=view)

    def sequence(name: str, a: dict, b: dict) -> None:
        _diff_attributes(f"sequence {name}", a, b, sorted(set(a) | set(b)), out)

    _each(live.get("sequences", {}), expected.get("sequences", {}), "sequence", out, both=sequence)

    def enum(name: str, a: list, b: list) -> None:
        if list(a) != list(b):
            out.append(f"enum {name}: labels differ (live {', '.join(a)}; expected {', '.join(b)})")

    _each(live.get("enums", {}), expected.get("enums", {}), "enum", out, both=enum)
    return out


# --- reading a snapshot ---------------------------------------------------------------------------

def snapshot_schema(cur, tables: list[tuple[int, str, str]]) -> dict:
    """The schema as JSON-ready data: tables (columns, indexes, constraints), views, sequences, enums.

    Indexes that implement a primary key, unique or exclusion constraint are listed under the
    constraint only. Column order is not part of the snapshot (a down/up round trip may move a
    column without changing what the application sees).
    """
    names = {oid: qualified(schema, name) for oid, schema, name in tables}
    snap: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "tables": {key: {"columns": {}, "indexes": {}, "constraints": {}} for key in sorted(names.values())},
    }
    _columns(cur, names, snap["tables"])
    _indexes(cur, names, snap["tables"])
    _constraints(cur, names, snap["tables"])
    snap["views"] = _views(cur)
    snap["sequences"] = _sequences(cur)
    snap["enums"] = _enums(cur)
    return snap


def _columns(cur, names: dict[int, str], tables: dict[str, Any]) -> None:
    cur.execute(
        "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum",
        (list(names),),
    )
    for relid, column, type_, nullable, default, identity, generated in cur.fetchall():
        generated_kind = _GENERATED.get(generated or "")
        tables[names[int(relid)]]["columns"][column] = {
            "type": type_,
            "nullable": bool(nullable),
            "default": None if generated_kind else default,
            "identity": _IDENTITY.get(identity or ""),
            "generated": f"{generated_kind}: {default}" if generated_kind else None,
        }


def _indexes(cur, names: dict[int, str], tables: dict[str, Any]) -> None:
    cur.execute(
        "SELECT i.indrelid, c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = ANY(%s::oid[]) AND NOT EXISTS ("
        "SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid "
        "AND k.contype IN ('p', 'u', 'x')) ORDER BY 1, 2",
        (list(names),),
    )
    for relid, index, definition in cur.fetchall():
        tables[names[int(relid)]]["indexes"][index] = definition


def _constraints(cur, names: dict[int, str], tables: dict[str, Any]) -> None:
    # contype 'n' (NOT NULL constraints, PostgreSQL 18) repeats the columns' nullability.
    cur.execute(
        "SELECT conrelid, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = ANY(%s::oid[]) AND contype <> 'n' ORDER BY 1, 2",
        (list(names),),
    )
    for relid, name, contype, definition in cur.fetchall():
        tables[names[int(relid)]]["constraints"][name] = {
            "type": _CONSTRAINT_TYPES.get(contype, contype), "definition": definition,
        }


def _views(cur) -> dict[str, Any]:
    cur.execute(
        "SELECT n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid) FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMA} AND "
        + NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid") + " ORDER BY 1, 2"
    )
    return {
        qualified(schema, name): {"kind": "materialized view" if kind == "m" else "view", "definition": definition}
        for schema, name, kind, definition in cur.fetchall()
    }


def _sequences(cur) -> dict[str, Any]:
    cur.execute(
        "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, "
        "s.seqmax, s.seqcycle FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMA} AND "
        + NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid") + " ORDER BY 1, 2"
    )
    return {
        qualified(schema, name): {"type": type_, "start": int(start), "increment": int(inc), "min": int(lo),
                                  "max": int(hi), "cycle": bool(cycle)}
        for schema, name, type_, start, inc, lo, hi, cycle in cur.fetchall()
    }


def _enums(cur) -> dict[str, Any]:
    cur.execute(
        "SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid "
        f"WHERE {USER_SCHEMA} AND " + NOT_FROM_EXTENSION.format(catalog="'pg_type'", oid="t.oid")
        + " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return {qualified(schema, name): list(labels) for schema, name, labels in cur.fetchall()}
