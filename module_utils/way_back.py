"""The way back from each pending revision, decided before apply: reversible, lossy or irreversible, and how.

Each revision is classified from its downgrade (its kind read from the file, its offline SQL parsed with
PostgreSQL's parser) and the rehearsal's round trip on the scratch database:

- ``irreversible``: no real downgrade (empty, ``pass``, raises, missing), or the round trip failed or did not
  give the schema back;
- ``lossy``: its downgrade drops tables or columns (or deletes rows) that will hold data written after apply;
- ``reversible``: otherwise (``proven`` when the rehearsal walked it).

Its way back: ``downgrade`` (reversible; lossy only with an explicit allow, else ``forward-fix``: restoring
its tables would lose more), ``restore-tables`` for an irreversible one (restore just the tables it touched
from the pre-migration backup and drop the tables it created, keeping every other table's writes),
``full-restore`` (when the environment allows it), or ``forward-fix``.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.dump_objects import table_name as _qualified
from ansible.module_utils.lint_walk import walk_plan

NO_DOWNGRADE = {"empty": "downgrade() is empty or pass", "raises": "downgrade() raises",
                "missing": "there is no downgrade()", "unknown": "the revision file cannot be read"}
_WRITES = {"UpdateStmt", "DeleteStmt", "InsertStmt", "TruncateStmt", "AlterTableStmt", "IndexStmt", "RenameStmt",
           "DropStmt", "CreateTrigStmt", "RuleStmt", "ClusterStmt", "VacuumStmt"}
_REWRITES = {"UpdateStmt", "DeleteStmt", "TruncateStmt"}  # old values gone unless the downgrade puts them back
# What a table restore cannot take back: objects that are not tables (types, functions, sequences, views, ...).
_OTHER_OBJECTS = {"CreateEnumStmt": "type", "AlterEnumStmt": "type", "CompositeTypeStmt": "type",
                  "CreateDomainStmt": "domain", "CreateRangeStmt": "type", "DefineStmt": "object",
                  "CreateFunctionStmt": "function", "CreateSeqStmt": "sequence", "ViewStmt": "view",
                  "CreateSchemaStmt": "schema", "CreateExtensionStmt": "extension", "DoStmt": "DO block"}


def _name(schema: str | None, table: str) -> str:
    """A table as pg_restore_tables and the report name it: bare in public, else schema-qualified; quoted."""
    return _qualified(schema or "public", table)


def _dropped_tables(node: Any) -> list[tuple[str, str]]:
    if type(node).__name__ != "DropStmt" or getattr(node.removeType, "name", "") != "OBJECT_TABLE":
        return []
    out = []
    for name in node.objects or ():
        parts = [getattr(part, "sval", str(part)) for part in name]
        out.append((parts[-2] if len(parts) > 1 else "public", parts[-1]))
    return out


def _dropped_columns(node: Any, table: str) -> list[str]:
    if type(node).__name__ != "AlterTableStmt":
        return []
    return [f"{table}.{cmd.name}" for cmd in node.cmds or ()
            if getattr(cmd.subtype, "name", "") == "AT_DropColumn" and cmd.name]


def _dropped_otherwise(node: Any) -> list[str]:
    """What a drop takes with it beyond a named table: a schema, anything a CASCADE reaches, or unreadable SQL."""
    kind = type(node).__name__
    if node is None:
        return ["whatever a statement the parser cannot read drops"]
    if kind == "DoStmt":
        return ["whatever its DO block drops (its body cannot be read)"]
    if kind != "DropStmt":
        return []
    what = getattr(node.removeType, "name", "").removeprefix("OBJECT_").lower()
    names = ", ".join(".".join(getattr(p, "sval", str(p)) for p in n) if isinstance(n, tuple | list)
                      else getattr(n, "sval", str(n)) for n in node.objects or ())
    if what == "schema":
        return [f"schema {names} and every table in it"]
    if getattr(node.behavior, "name", "") == "DROP_CASCADE":
        return [f"everything that depends on {what} {names} (CASCADE)"]
    return []


def losses(downgrade_sql: str | None, version_table: str = "alembic_version") -> list[str]:
    """What a downgrade's SQL throws away: tables, columns and schemas it drops, what a CASCADE or a DO block may
    drop, rows it deletes."""
    if not downgrade_sql:
        return []
    walk = walk_plan([{"revision": "down", "sql": downgrade_sql}], version_table)
    out: list[str] = []
    for stmt in walk.statements:
        kind = type(stmt.node).__name__
        name = _name(stmt.schema, stmt.table) if stmt.table else "a table"
        out += [f"table {_name(*t)}" for t in _dropped_tables(stmt.node)]
        out += [f"column {c}" for c in _dropped_columns(stmt.node, name)]
        out += _dropped_otherwise(stmt.node)
        if kind in ("DeleteStmt", "TruncateStmt") and stmt.table != walk.version_table:
            out.append(f"rows of {name}")
    return list(dict.fromkeys(out))


def tables_acted_on(sql: str | None, version_table: str = "alembic_version") -> set[str]:
    """Every table a piece of SQL acts on (the downgrade's, to see whether it touches what the upgrade rewrote)."""
    if not sql:
        return set()
    walk = walk_plan([{"revision": "sql", "sql": sql}], version_table)
    return {_name(s.schema, s.table) for s in walk.statements if s.table} | {
        _name(*t) for s in walk.statements for t in _dropped_tables(s.node)}


def touched(revisions: list[dict[str, Any]], version_table: str = "alembic_version") -> dict[str, dict[str, list]]:
    """Per revision: the existing tables its upgrade writes or alters (``tables``), the ones it creates
    (``created``), the existing tables whose rows it rewrites (``rewrites``) and the objects other than tables it
    creates or changes (``objects``: a table restore does not take those back)."""
    walk = walk_plan(revisions, version_table)
    out = {e["revision"]: {"tables": [], "created": [], "rewrites": [], "objects": []} for e in revisions}
    for stmt in walk.statements:
        kind = type(stmt.node).__name__
        entry = out[stmt.revision]
        if kind in _OTHER_OBJECTS or (kind == "CreateTableAsStmt" and "MATVIEW" in str(stmt.node.objtype)):
            entry["objects"].append(f"{_OTHER_OBJECTS.get(kind, 'materialized view')} (line {stmt.line})")
            continue
        keys = _dropped_tables(stmt.node) or ([(stmt.schema, stmt.table)] if stmt.table else [])
        for schema, table in keys:
            if table == walk.version_table:
                continue
            name = _name(schema, table)
            if kind in ("CreateStmt", "CreateTableAsStmt"):
                entry["created"].append(name)
            elif kind in _WRITES and not stmt.table_is_new and name not in entry["tables"]:
                entry["tables"].append(name)
            if kind in _REWRITES and not stmt.table_is_new and name not in entry["rewrites"]:
                entry["rewrites"].append(name)
    return out


def classify(entry: dict[str, Any], trip: dict[str, Any] | None, rewrites: list[str] | None = None) -> dict[str, Any]:
    """One revision's kind, why, and whether the rehearsal proved it."""
    round_trip = (trip or {}).get("round_trip", "not proven")
    if entry.get("downgrade") in NO_DOWNGRADE:
        return {"kind": "irreversible", "why": NO_DOWNGRADE[entry["downgrade"]], "proven": True}
    if entry.get("downgrade_error"):
        return {"kind": "irreversible", "why": f"its downgrade fails offline: {entry['downgrade_error']}",
                "proven": True}
    if round_trip in ("failed", "differs"):
        return {"kind": "irreversible", "proven": True,
                "why": f"down and up on the scratch database {round_trip}: {(trip or {}).get('detail')}"}
    if (trip or {}).get("stopped"):
        return {"kind": "irreversible", "proven": False,
                "why": f"its downgrade was never rehearsed ({trip['detail']}): not taken automatically"}
    kept = sorted(set(rewrites or ()) - tables_acted_on(entry.get("downgrade_sql")))
    if kept and entry.get("downgrade_sql") is not None:
        return {"kind": "irreversible", "proven": True,
                "why": f"its upgrade rewrites rows of {', '.join(kept)} and its downgrade does not touch them: the "
                       "old values do not come back"}
    lost = losses(entry.get("downgrade_sql"))
    if lost:
        return {"kind": "lossy", "why": f"its downgrade drops {', '.join(lost)}", "proven": round_trip == "ok",
                "loses": lost}
    return {"kind": "reversible", "why": "its downgrade gives the schema back and drops no data",
            "proven": round_trip == "ok"}


def way_back(kind: str, touches: dict[str, list], *, allow_lossy: bool, allow_restore: bool,
             analysable: bool) -> dict[str, str]:
    """How to go back through one revision of this kind."""
    if kind == "reversible" or (kind == "lossy" and allow_lossy):
        return {"method": "downgrade", "why": "its downgrade" + (" (lossy, allowed)" if kind == "lossy" else "")}
    if kind == "lossy":  # restoring its tables would lose more (every write to them since the backup)
        return {"method": "forward-fix", "why": "its downgrade loses data written after apply and "
                "rm_allow_lossy_downgrade is off: fix forward, or allow it after review"}
    objects = touches.get("objects") or []
    if analysable and not objects and (touches["tables"] or touches["created"]):
        what = ", ".join(touches["tables"]) or "none"
        return {"method": "restore-tables",
                "why": f"restore the tables it touched ({what}) from the pre-migration backup and drop the tables "
                       f"it created ({', '.join(touches['created']) or 'none'}); every other table keeps its writes"}
    beyond = f"it changes more than tables ({', '.join(objects)}), which a table restore does not take back; "
    if allow_restore:
        return {"method": "full-restore", "why": (beyond if objects else "") + "restore the pre-migration backup "
                "(writes since it are lost)"}
    return {"method": "forward-fix", "why": (beyond if objects else "") + "no downgrade, no table restore and no "
            "full restore allowed here: fix forward with a new revision"}


def plan(revisions: list[dict[str, Any]], trips: list[dict[str, Any]] | None, *, allow_lossy: bool = False,
         allow_restore: bool = False, version_table: str = "alembic_version") -> list[dict[str, Any]]:
    """The way back of each pending revision (the preview's table and the rollback's plan)."""
    by_revision = {t["revision"]: t for t in trips or []}
    touches = touched(revisions, version_table)
    out = []
    for entry in revisions:
        mine = touches[entry["revision"]]
        kind = classify(entry, by_revision.get(entry["revision"]), mine["rewrites"])
        analysable = entry.get("sql") is not None
        out.append({"revision": entry["revision"], **kind, **mine,
                    "way_back": way_back(kind["kind"], mine, allow_lossy=allow_lossy,
                                         allow_restore=allow_restore, analysable=analysable)})
    return out


def rollback_method(way_back_plan: list[dict[str, Any]], applied: list[str]) -> dict[str, Any]:
    """How the automatic rollback undoes the revisions a failed run applied: a downgrade only when every one of
    them goes back by downgrade; else one table restore of everything they touched; else the strongest."""
    entries = [e for e in way_back_plan if e["revision"] in applied]
    methods = {e["way_back"]["method"] for e in entries}
    tables = sorted({t for e in entries for t in e["tables"]})
    created = sorted({t for e in entries for t in e["created"]} - set(tables))
    if not entries or methods == {"downgrade"}:
        return {"method": "downgrade", "tables": [], "created": [], "why": "every applied revision goes back by its "
                "downgrade" if entries else "nothing in the plan says otherwise"}
    if methods <= {"downgrade", "restore-tables"}:
        blockers = [e["revision"] for e in entries if e["way_back"]["method"] == "restore-tables"]
        return {"method": "restore-tables", "tables": tables, "created": created,
                "why": f"{', '.join(blockers)} cannot go back by downgrade: restore the touched tables instead"}
    strongest = "full-restore" if "full-restore" in methods else "forward-fix"
    names = [e["revision"] for e in entries if e["way_back"]["method"] == strongest]
    return {"method": strongest, "tables": tables, "created": created,
            "why": f"{', '.join(names)}: {next(e['way_back']['why'] for e in entries if e['revision'] in names)}"}
