"""Backup names, manifests, checksums, and which backups in a directory count (latest, retention).

A backup is ``<database>-<UTC %Y%m%dT%H%M%SZ>[-label].<ext>`` (a file, or a directory for the directory
format) with ``<backup>.manifest.json`` beside it. While being written it is ``<backup>.partial``; only
a finished, verified backup gets its final name and then its manifest, so a backup without a manifest
never counts as verified. Everything here is plain file work, testable on a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible.module_utils.operator_error import OperatorError

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
FORMATS = ("custom", "directory", "plain", "tar")
EXTENSIONS = ("sql.gz", "dump", "dir", "sql", "tar")
STALE_PARTIAL_S = 3600
_CHUNK = 1 << 20
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*$")
_NAME_RE = re.compile(
    r"^(?P<database>.+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<label>[A-Za-z0-9][A-Za-z0-9._]*))?"
    r"\.(?P<ext>sql\.gz|dump|dir|sql|tar)$"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123Z``: sortable as text, readable by :func:`parse_iso`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def extension(fmt: str, compressed: bool) -> str:
    """File extension for a format: dump, dir, tar, sql.gz (plain + gzip) or sql."""
    if fmt == "custom":
        return "dump"
    if fmt == "directory":
        return "dir"
    if fmt == "tar":
        return "tar"
    if fmt == "plain":
        return "sql.gz" if compressed else "sql"
    raise OperatorError(f"Unknown backup format '{fmt}'.", f"Use one of: {', '.join(FORMATS)}.")


def validate_label(label: str | None) -> str | None:
    """A label goes into a file name: letters, digits, dot and underscore only."""
    if label in (None, ""):
        return None
    if not _LABEL_RE.match(label) or len(label) > 64:
        raise OperatorError(
            f"Backup label '{label}' cannot be part of a file name.",
            "Use letters, digits, '.' and '_' only (no '-', '/' or spaces), at most 64 characters, "
            "e.g. pre_release_42.",
        )
    return label


def backup_name(database: str, when: datetime, fmt: str, compressed: bool, label: str | None = None) -> str:
    """``release_manager-20240501T120000Z-pre_release.dump``."""
    if "/" in database or database in (".", ".."):
        raise OperatorError(f"Database name '{database}' cannot be part of a file name.", "Rename the database.")
    stamp = when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
    suffix = f"-{validate_label(label)}" if label else ""
    return f"{database}-{stamp}{suffix}.{extension(fmt, compressed)}"


def parse_backup_name(name: str) -> dict[str, Any] | None:
    """database, taken_at (datetime), label, ext of a backup file name; None when it is not one."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    taken = datetime.strptime(match["stamp"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    return {"database": match["database"], "taken_at": taken, "label": match["label"], "ext": match["ext"]}


def format_of(path: str | Path) -> str | None:
    """The backup format, from the name (or a directory holding toc.dat)."""
    path = Path(path)
    name = path.name.removesuffix(PARTIAL_SUFFIX)
    if name.endswith(".sql.gz") or name.endswith(".sql"):
        return "plain"
    if name.endswith(".dump"):
        return "custom"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith(".dir") or (path.is_dir() and (path / "toc.dat").is_file()):
        return "directory"
    return None


def manifest_path_for(backup: str | Path) -> Path:
    backup = Path(backup)
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


# --- checksums -------------------------------------------------------------------------------------


class HashingWriter:
    """A binary file wrapper that hashes and counts what is written through it."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    @property
    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def directory_files(path: str | Path) -> list[str]:
    """Relative paths (``/``-separated) of every file under a directory, sorted."""
    root = Path(path)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def directory_digest(files: dict[str, str]) -> str:
    """One sha256 for a directory: the sha256 of its sorted ``relpath:sha256\\n`` lines."""
    lines = "".join(f"{rel}:{files[rel]}\n" for rel in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_directory(path: str | Path, workers: int = 4) -> tuple[str, dict[str, str]]:
    """(overall sha256, {relpath: sha256}); files hashed in parallel (hashlib releases the GIL)."""
    root = Path(path)
    names = directory_files(root)
    with ThreadPoolExecutor(max_workers=max(1, min(32, workers))) as pool:
        digests = list(pool.map(lambda rel: sha256_file(root / rel), names))
    files = dict(zip(names, digests, strict=True))
    return directory_digest(files), files


def backup_size(path: str | Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def verify_checksum(backup: str | Path, manifest: dict[str, Any], workers: int = 4) -> str:
    """Compare the backup on disk with its manifest; return its sha256 or raise a checksum mismatch."""
    backup = Path(backup)
    expected = manifest.get("sha256")
    if not expected:
        raise OperatorError(
            f"The manifest of {backup.name} records no sha256, so the backup cannot be checked.",
            "Take another backup with pg_backup, or set verify_checksum: false to restore it unchecked.",
        )

    def mismatch(detail: str) -> OperatorError:
        return OperatorError(
            f"checksum mismatch: backup {backup} was modified or truncated after it was written ({detail}).",
            "Do not restore it; take another backup (or restore an older verified one).",
            path=str(backup),
        )

    if not backup.exists():
        raise OperatorError(f"Backup {backup} does not exist (its manifest does).", "Take another backup.")
    if backup.is_dir():
        recorded = manifest.get("files") or {}
        actual, files = hash_directory(backup, workers)
        missing = sorted(set(recorded) - set(files))
        extra = sorted(set(files) - set(recorded))
        changed = sorted(rel for rel in set(recorded) & set(files) if recorded[rel] != files[rel])
        if missing or extra or changed:
            parts = []
            if changed:
                parts.append(f"changed: {', '.join(changed[:5])}")
            if missing:
                parts.append(f"missing: {', '.join(missing[:5])}")
            if extra:
                parts.append(f"unexpected: {', '.join(extra[:5])}")
            raise mismatch("; ".join(parts))
        if actual != expected:
            raise mismatch(f"directory sha256 {actual} != manifest {expected}")
        return actual
    size = backup.stat().st_size
    if manifest.get("size_bytes") is not None and size != manifest["size_bytes"]:
        raise mismatch(f"{size} bytes on disk, {manifest['size_bytes']} in the manifest")
    actual = sha256_file(backup)
    if actual != expected:
        raise mismatch(f"sha256 {actual} != manifest {expected}")
    return actual


# --- manifests -------------------------------------------------------------------------------------


def write_manifest(backup: str | Path, data: dict[str, Any]) -> Path:
    """Write ``<backup>.manifest.json`` atomically (temp file, fsync, rename)."""
    target = manifest_path_for(backup)
    payload = {"format_version": FORMAT_VERSION, **data}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_manifest(backup: str | Path) -> dict[str, Any]:
    """The manifest beside a backup; OperatorError when it is missing or unreadable."""
    path = manifest_path_for(backup)
    if not path.is_file():
        raise OperatorError(
            f"Backup {backup} has no manifest ({path.name}), so it was never verified as finished.",
            "Restore a backup written by pg_backup, or set verify_checksum: false to restore it unchecked.",
            path=str(backup),
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OperatorError(f"Cannot read manifest {path}: {exc}.", "Take another backup.") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise OperatorError(
            f"Manifest {path} is not a release-migrations manifest (format_version {FORMAT_VERSION}).",
            "Take another backup with pg_backup.",
        )
    return data


# --- the backups in a directory --------------------------------------------------------------------


@dataclass
class BackupEntry:
    """A finished backup (file or directory) in a backup directory, with its manifest if it has one."""

    path: Path
    database: str
    finished_at: datetime
    manifest: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.manifest and self.manifest.get("verified")) and self.path.exists()

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
    database = (manifest or {}).get("database") or (parsed or {}).get("database")
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
        if name.startswith(".") or name.endswith(PARTIAL_SUFFIX) or name.endswith(".tmp"):
            continue
        if name.endswith(MANIFEST_SUFFIX):
            candidates.add(item.with_name(name.removesuffix(MANIFEST_SUFFIX)))
        elif parse_backup_name(name):
            candidates.add(item)
    entries = [e for e in (_entry(p) for p in sorted(candidates)) if e is not None]
    return sorted(entries, key=lambda e: (e.finished_at, e.path.name), reverse=True)


def latest_verified(entries: list[BackupEntry], database: str) -> BackupEntry | None:
    """The newest verified backup of ``database`` (by manifest finished_at)."""
    verified = [e for e in entries if e.database == database and e.verified]
    return max(verified, key=lambda e: (e.finished_at, e.path.name), default=None)


def retention_victims(
    entries: list[BackupEntry], database: str, keep: int, protect: tuple[str | Path, ...] = ()
) -> list[BackupEntry]:
    """Backups of ``database`` beyond the newest ``keep``; never the newest verified, never ``protect``."""
    if keep <= 0:
        return []
    mine = sorted(
        (e for e in entries if e.database == database), key=lambda e: (e.finished_at, e.path.name), reverse=True
    )
    newest_verified = latest_verified(mine, database)
    protected = {Path(p).resolve() for p in protect}
    if newest_verified is not None:
        protected.add(newest_verified.path.resolve())
    return [e for e in mine[keep:] if e.path.resolve() not in protected]


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for item in path.rglob("*"):
            try:
                newest = max(newest, item.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def stale_partials(
    dest: str | Path, database: str, now: float | None = None, older_than_s: int = STALE_PARTIAL_S
) -> list[Path]:
    """Leftover ``.partial`` backups of ``database`` untouched for ``older_than_s`` (a crashed run's)."""
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
            if now - _newest_mtime(item) > older_than_s:
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
    if entry.manifest_path.exists():
        entry.manifest_path.unlink()
        removed.append(str(entry.manifest_path))
    if entry.path.exists():
        remove_path(entry.path)
        removed.append(str(entry.path))
    return removed
