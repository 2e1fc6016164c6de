"""The backups in a directory: which are pg_backup's own, which is the latest verified, which retention
may remove, and which ``.partial`` leftovers of a crashed run may go.

Nothing here deletes a file that pg_backup did not write: a backup counts as ours only when its
manifest names it (see BackupEntry.ours).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible.module_utils.backup_manifest import (
    MANIFEST_SUFFIX,
    PARTIAL_SUFFIX,
    STALE_PARTIAL_S,
    manifest_path_for,
    parse_backup_name,
    parse_iso,
    read_manifest,
    utc_now,
)
from ansible.module_utils.operator_error import OperatorError

PIN_SUFFIX = ".pin"
# A pin older than this is a crashed run's leftover and no longer protects its backup.
PIN_TTL_S = 6 * 3600
# Backups with this label are copies of a state that was about to be replaced: never `latest`.
PRE_RESTORE_LABEL = "pre_restore"


@dataclass(frozen=True)
class Server:
    """Which server a backup came from: PostgreSQL's system identifier, else the host as reached."""

    system_identifier: str | None
    host: str | None

    def took(self, manifest: dict[str, Any] | None) -> bool:
        manifest = manifest or {}
        theirs = manifest.get("system_identifier")
        if theirs and self.system_identifier:
            return str(theirs) == str(self.system_identifier)
        return manifest.get("host") == self.host


@dataclass
class BackupEntry:
    """A finished backup (file or directory) in a backup directory, with its manifest if it has one."""

    path: Path
    database: str
    finished_at: datetime
    manifest: dict[str, Any] | None = None

    @property
    def ours(self) -> bool:
        """Written by pg_backup: a manifest that names this very file and the database its name carries.

        Only such backups count for ``latest`` and only they may be removed by retention: a file that
        merely looks like a backup name (someone's notes, a copy, a renamed backup) is never touched.
        """
        if not self.manifest or not self.path.exists():
            return False
        parsed = parse_backup_name(self.path.name)
        return (self.manifest.get("path") == self.path.name and parsed is not None
                and self.manifest.get("database") == parsed["database"])

    @property
    def verified(self) -> bool:
        return self.ours and bool(self.manifest.get("verified"))

    @property
    def pre_restore(self) -> bool:
        return (self.manifest or {}).get("label") == PRE_RESTORE_LABEL

    @property
    def pinned(self) -> bool:
        """A run is restoring from this backup right now (its pin is fresh): retention leaves it alone."""
        pin = pin_path(self.path)
        try:
            return time.time() - pin.stat().st_mtime < PIN_TTL_S
        except FileNotFoundError:
            return False

    @property
    def manifest_path(self) -> Path:
        return manifest_path_for(self.path)


def _entry(path: Path) -> BackupEntry | None:
    parsed = parse_backup_name(path.name)
    manifest = None
    if manifest_path_for(path).is_file():
        try:
            manifest = read_manifest(path)
        except OperatorError:
            manifest = None
    if manifest is None and parsed is None:
        return None
    # The file name says whose backup it is; a manifest that disagrees makes it "not ours" (see ours).
    database = (parsed or {}).get("database") or (manifest or {}).get("database")
    finished = parse_iso((manifest or {}).get("finished_at")) or (parsed or {}).get("taken_at")
    if finished is None:
        finished = datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.exists() else utc_now()
    return BackupEntry(path=path, database=database, finished_at=finished, manifest=manifest)


def scan_backups(dest: str | Path) -> list[BackupEntry]:
    """Every finished backup in ``dest`` (named like one, or with a manifest), newest first."""
    root = Path(dest)
    if not root.is_dir():
        return []
    candidates: set[Path] = set()
    for item in root.iterdir():
        name = item.name
        if name.startswith(".") or name.endswith((PARTIAL_SUFFIX, ".tmp", PIN_SUFFIX)):
            continue
        if name.endswith(MANIFEST_SUFFIX):
            candidates.add(item.with_name(name.removesuffix(MANIFEST_SUFFIX)))
        elif parse_backup_name(name):
            candidates.add(item)
    entries = [e for e in (_entry(p) for p in sorted(candidates)) if e is not None]
    return sorted(entries, key=lambda e: (e.finished_at, e.path.name), reverse=True)


def latest_verified(entries: list[BackupEntry], database: str, *, server: Server | None = None,
                    prefer_server: Server | None = None) -> BackupEntry | None:
    """The newest verified backup of ``database`` written by pg_backup (by manifest finished_at).

    Never a ``pre_restore`` copy (the state a restore replaced); only backups of ``server`` when given;
    backups of ``prefer_server`` first when there are any.
    """
    verified = [e for e in entries if e.database == database and e.verified and not e.pre_restore
                and (server is None or server.took(e.manifest))]
    if prefer_server is not None:
        verified = [e for e in verified if prefer_server.took(e.manifest)] or verified
    return max(verified, key=lambda e: (e.finished_at, e.path.name), default=None)


def backup_for_revision(entries: list[BackupEntry], database: str, revision: str | None, max_age_s: float,
                        now: datetime | None = None) -> tuple[BackupEntry | None, str]:
    """The backup a restore would need now: the newest verified backup of ``database`` taken at ``revision``
    (the revision the database is recorded at), at most ``max_age_s`` old. (entry or None, why)."""
    now = now or utc_now()
    newest = latest_verified(entries, database)
    if revision is None:
        return newest, ("the newest verified backup (no revision is recorded for this environment yet)"
                        if newest else f"no verified backup of {database}")
    wanted = set(revision.split(",")) - {""}
    at_revision = [e for e in entries if e.database == database and e.verified and not e.pre_restore
                   and set((e.manifest.get("alembic_revision") or "").split(",")) - {""} == wanted]
    best = max(at_revision, key=lambda e: (e.finished_at, e.path.name), default=None)
    if best is not None and (now - best.finished_at).total_seconds() <= max_age_s:
        return best, f"the newest verified backup at the recorded revision {revision}"
    if best is not None:
        age_h = (now - best.finished_at).total_seconds() / 3600
        return None, (f"stale backup: the newest verified backup at revision {revision} ({best.path.name}) is "
                      f"{age_h:.1f} h old, more than {max_age_s / 3600:.1f} h")
    if newest is not None:
        return None, (f"stale backup: the newest verified backup ({newest.path.name}) is at revision "
                      f"{newest.manifest.get('alembic_revision') or 'base'}, the database is recorded at {revision}")
    return None, f"stale backup: there is no verified backup of {database} at all"


def retention_victims(
    entries: list[BackupEntry], database: str, keep: int, protect: tuple[str | Path, ...] = (),
    server: Server | None = None,
) -> list[BackupEntry]:
    """pg_backup's own backups of ``database`` (on ``server``) beyond the newest ``keep``.

    Never the newest verified one, never one in ``protect`` (the backup a run restores from or may
    roll back to), never one pinned by a restore in progress, never a file pg_backup did not write (no
    manifest naming it), never another server's backup of a database of the same name.
    """
    if keep <= 0:
        return []
    mine = sorted(
        (e for e in entries if e.database == database and e.ours and (server is None or server.took(e.manifest))),
        key=lambda e: (e.finished_at, e.path.name), reverse=True,
    )
    newest_verified = latest_verified(mine, database)
    protected = {Path(p).expanduser().resolve() for p in protect if p}
    if newest_verified is not None:
        protected.add(newest_verified.path.resolve())
    return [e for e in mine[keep:] if e.path.resolve() not in protected and not e.pinned]


def pin_path(backup: str | Path) -> Path:
    backup = Path(backup)
    return backup.with_name(backup.name + PIN_SUFFIX)


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for item in path.rglob("*"):
            try:
                newest = max(newest, item.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


# The first bytes of what pg_dump writes, per format: a leftover that starts otherwise is not ours.
_DUMP_MAGIC = (b"PGDMP", b"\x1f\x8b", b"--\n-- PostgreSQL database dump", b"toc.dat")


_BINARY_FILES = ("schema.sql.gz", "data.sql.gz", "rows.json", "rows.psql")


def looks_like_dump(path: Path) -> bool:
    """Whether a .partial is pg_dump output (custom, gzip, plain SQL, tar, a directory with toc.dat, or a binary
    backup's directory holding only its own files)."""
    try:
        if path.is_dir() and not path.is_symlink():
            if path.name.removesuffix(PARTIAL_SUFFIX).endswith(".bin"):  # the binary format's directory
                return all(p.is_file() and p.name in _BINARY_FILES or p.is_dir() and p.name == "rows" and all(
                    f.is_file() and re.fullmatch(r"\d+\.copy\.gz", f.name) for f in p.iterdir())
                    for p in path.iterdir())
            return (path / "toc.dat").is_file() and all(
                p.is_file() and re.fullmatch(r"(toc|\d+|blobs_\d+|blob_\d+)\.(dat|toc)(\.gz|\.lz4|\.zst)?", p.name)
                for p in path.iterdir())
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    return head.startswith(_DUMP_MAGIC) or head[257:262] == b"ustar"


def stale_partials(
    dest: str | Path, database: str, now: float | None = None, older_than_s: int = STALE_PARTIAL_S
) -> list[Path]:
    """Leftover ``.partial`` backups of ``database`` untouched for ``older_than_s`` (a crashed run's).

    Only what pg_dump itself wrote (see :func:`looks_like_dump`) counts as a leftover.
    """
    root = Path(dest)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    stale = []
    for item in sorted(root.iterdir()):
        if not item.name.endswith(PARTIAL_SUFFIX):
            continue
        parsed = parse_backup_name(item.name.removesuffix(PARTIAL_SUFFIX))
        if parsed is None or parsed["database"] != database:
            continue
        try:
            if now - _newest_mtime(item) > older_than_s and looks_like_dump(item):
                stale.append(item)
        except FileNotFoundError:
            continue
    return stale


def remove_path(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_backup(entry: BackupEntry) -> list[str]:
    """Delete a backup and its manifest (manifest first: a backup never looks verified half-deleted)."""
    removed = []
    pin_path(entry.path).unlink(missing_ok=True)
    if entry.manifest_path.exists():
        entry.manifest_path.unlink()
        removed.append(str(entry.manifest_path))
    if entry.path.exists():
        remove_path(entry.path)
        removed.append(str(entry.path))
    return removed
