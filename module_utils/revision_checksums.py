"""Checksums of applied revisions, kept with the database: an applied revision file edited later is caught.

The sha256 of each applied revision's file is kept in the comment of the version table
(``COMMENT ON TABLE alembic_version``), after any text of the team's own. Not an extra table: Alembic's
autogenerate never compares its own version table, so the app's ``alembic revision --autogenerate`` sees
nothing, and a comment travels with ``pg_dump`` / ``pg_restore`` (and so with our backups).
"""

from __future__ import annotations

import json
from typing import Any

from ansible.module_utils.alembic_offline import file_sha256
from ansible.module_utils.alembic_plan import Project, ancestry

MARKER = "release-migrations revision checksums (sha256):"


def parse_comment(comment: str | None) -> tuple[str, dict[str, str]]:
    """(the comment's own text, {revision: sha256}) from a version table's comment."""
    text = comment or ""
    head, marker, tail = text.rpartition(MARKER)  # ours is always last; the team's text may quote the marker
    if not marker:
        return text, {}
    try:
        found = json.loads(tail)
    except ValueError:
        return text, {}
    if not isinstance(found, dict):
        return text, {}
    return head.rstrip(), {str(k): str(v) for k, v in found.items()}


def comment_text(own: str, checksums: dict[str, str]) -> str:
    body = json.dumps(dict(sorted(checksums.items())), separators=(",", ":"))
    return f"{own}\n\n{MARKER} {body}" if own else f"{MARKER} {body}"


def _version_table(cur, version_table: str) -> int | None:
    from ansible.module_utils.pg_catalog import version_table_oid

    return version_table_oid(cur, version_table)


def read_recorded(cur, version_table: str) -> tuple[str, dict[str, str]] | None:
    """The comment's own text and the checksums on record; None when the version table does not exist."""
    oid = _version_table(cur, version_table)
    if oid is None:
        return None
    cur.execute("SELECT obj_description(%s::oid, 'pg_class')", (oid,))
    return parse_comment(cur.fetchone()[0])


def write_recorded(cur, version_table: str, own: str, checksums: dict[str, str]) -> None:
    oid = _version_table(cur, version_table)
    cur.execute("SELECT %s::oid::regclass::text", (oid,))
    name = cur.fetchone()[0]  # regclass text is already quoted where it needs to be
    cur.execute(f"COMMENT ON TABLE {name} IS %s", (comment_text(own, checksums),))


def applied_files(script, project: Project, current: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{revision: {path, sha256}} for every revision at or below ``current`` that has a file."""
    import os

    out: dict[str, dict[str, Any]] = {}
    for rev in sorted(ancestry(script, current)):
        sc = script.get_revision(rev)
        if sc is not None and sc.path and os.path.isfile(sc.path):
            out[rev] = {"path": os.path.relpath(sc.path, project.home), "sha256": file_sha256(sc.path)}
    return out


def compare(files: dict[str, dict[str, Any]], recorded: dict[str, str]) -> dict[str, Any]:
    """Applied revision files against the checksums on record."""
    edited = [{"revision": rev, "path": f["path"], "recorded": recorded[rev], "actual": f["sha256"]}
              for rev, f in files.items() if rev in recorded and recorded[rev] != f["sha256"]]
    return {
        "matching": len([rev for rev in files if rev in recorded and recorded[rev] == files[rev]["sha256"]]),
        "missing": sorted(rev for rev in files if rev not in recorded),
        "edited": edited,
    }


def updated(files: dict[str, dict[str, Any]], recorded: dict[str, str], applied_now: list[str],
            accept_edited: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The checksums to keep after a run, and what changed: ``recorded`` (applied by this run),
    ``backfilled`` (applied before checksums were kept), ``accepted`` (edited and accepted after review),
    ``removed`` (no longer applied). An edited file that was not accepted keeps its old checksum."""
    keep = {rev: sha for rev, sha in recorded.items() if rev in files}
    changes: dict[str, list[str]] = {"recorded": [], "backfilled": [], "accepted": [],
                                     "removed": sorted(set(recorded) - set(files))}
    for rev, f in files.items():
        if rev in applied_now and keep.get(rev) != f["sha256"]:
            changes["recorded"].append(rev)
        elif rev not in keep:
            changes["backfilled"].append(rev)
        elif keep[rev] != f["sha256"] and rev in accept_edited:
            changes["accepted"].append(rev)
        else:
            continue
        keep[rev] = f["sha256"]
    return keep, changes
