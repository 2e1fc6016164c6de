"""A backup's name, its manifest and its checksums: what one backup is, and whether its bytes are intact.

A backup is ``<database>-<UTC %Y%m%dT%H%M%SZ>[-label].<ext>`` (a file, or a directory for the directory
and binary formats) with ``<backup>.manifest.json`` beside it. While being written it is ``<backup>.partial``; only
a finished, verified backup gets its final name and then its manifest, so a backup without a manifest
never counts as verified. Which backups of a directory count (latest, retention) is backup_catalog.py.
Everything here is plain file work, testable on a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_connection import path_component

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
FORMATS = ("binary", "custom", "directory", "plain", "tar")
EXTENSIONS = ("sql.gz", "dump", "dir", "bin", "sql", "tar")
STALE_PARTIAL_S = 3600
_CHUNK = 1 << 20
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*$")
_NAME_RE = re.compile(
    r"^(?P<database>.+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<label>[A-Za-z0-9][A-Za-z0-9._]*))?"
    r"\.(?P<ext>sql\.gz|dump|dir|bin|sql|tar)$"
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
    """File extension for a format: dump, dir, bin, tar, sql.gz (plain + gzip) or sql."""
    if fmt == "binary":
        return "bin"
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
    """``release_manager-20240501T120000Z-pre_release.dump``; any database name stays one file name
    inside the backup directory (``../x`` is written ``%2E.%2Fx``)."""
    stamp = when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
    suffix = f"-{validate_label(label)}" if label else ""
    return f"{path_component(database)}-{stamp}{suffix}.{extension(fmt, compressed)}"


def parse_backup_name(name: str) -> dict[str, Any] | None:
    """database, taken_at (datetime), label, ext of a backup file name; None when it is not one."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    taken = datetime.strptime(match["stamp"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    return {"database": unquote(match["database"]), "taken_at": taken, "label": match["label"], "ext": match["ext"]}


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
    if name.endswith(".bin"):
        return "binary"
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


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
