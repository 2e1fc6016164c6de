"""Backup names, manifests and checksums (on a temp dir, no server). make_backup is shared with
test_backup_catalog.py."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from ansible.module_utils.backup_manifest import (
    MANIFEST_SUFFIX,
    backup_name,
    directory_digest,
    extension,
    format_of,
    hash_directory,
    iso,
    manifest_path_for,
    parse_backup_name,
    parse_iso,
    read_manifest,
    sha256_file,
    validate_label,
    verify_checksum,
    write_manifest,
)
from ansible.module_utils.operator_error import OperatorError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def make_backup(dest: Path, database: str, when: datetime, *, verified: bool = True, manifest: bool = True,
                fmt: str = "custom", content: bytes = b"backup-bytes") -> Path:
    """A fake finished backup (file or directory) with an optional manifest."""
    path = dest / backup_name(database, when, fmt, True)
    files = None
    if fmt == "directory":
        path.mkdir()
        (path / "toc.dat").write_bytes(content)
        (path / "3001.dat.gz").write_bytes(content * 2)
        sha, files = hash_directory(path)
    else:
        path.write_bytes(content)
        sha = sha256_file(path)
    if manifest:
        data = {"database": database, "format": fmt, "sha256": sha, "size_bytes": None if files else len(content),
                "finished_at": iso(when + timedelta(seconds=5)), "verified": verified, "path": path.name}
        if files:
            data["files"] = files
        write_manifest(path, data)
    return path


# --- names -------------------------------------------------------------------------------------------


def test_backup_name_is_database_utc_stamp_label_and_extension():
    when = datetime(2024, 5, 1, 14, 0, 0, tzinfo=UTC)
    assert backup_name("release_manager", when, "custom", True) == "release_manager-20240501T140000Z.dump"
    assert backup_name("rm", when, "plain", True, "pre_release") == "rm-20240501T140000Z-pre_release.sql.gz"
    assert backup_name("rm", when, "plain", False) == "rm-20240501T140000Z.sql"
    assert backup_name("rm", when, "directory", True) == "rm-20240501T140000Z.dir"
    assert backup_name("rm", when, "tar", False) == "rm-20240501T140000Z.tar"


def test_backup_name_converts_local_time_to_utc():
    local = datetime(2024, 5, 1, 16, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert backup_name("rm", local, "custom", True) == "rm-20240501T140000Z.dump"


def test_parse_backup_name_round_trips_including_dashes_in_database():
    name = backup_name("my-app", T0, "plain", True, "v1.2_rc")
    parsed = parse_backup_name(name)
    assert parsed == {"database": "my-app", "taken_at": T0, "label": "v1.2_rc", "ext": "sql.gz"}
    assert parse_backup_name("notes.txt") is None
    assert parse_backup_name(name + ".partial") is None


@pytest.mark.parametrize("label", ["has space", "a/b", "-lead", "x-y", "a" * 65])
def test_labels_that_cannot_be_in_a_file_name_are_refused(label):
    with pytest.raises(OperatorError, match="cannot be part of a file name"):
        validate_label(label)


def test_extension_and_format_of_agree():
    for fmt, compressed in (("custom", True), ("directory", True), ("tar", False), ("plain", True), ("plain", False)):
        assert format_of(f"db-20240501T000000Z.{extension(fmt, compressed)}") == fmt
    assert format_of("db-20240501T000000Z.dump.partial") == "custom"
    with pytest.raises(OperatorError):
        extension("yaml", False)


def test_iso_is_sortable_and_parsed_back():
    assert iso(T0) == "2024-05-01T12:00:00.000Z"
    assert parse_iso(iso(T0)) == T0
    assert parse_iso("garbage") is None
    assert iso(T0) < iso(T0 + timedelta(milliseconds=1))


# --- manifests and checksums -------------------------------------------------------------------------


def test_manifest_write_is_atomic_and_read_back(tmp_path):
    backup = tmp_path / "db-20240501T120000Z.dump"
    backup.write_bytes(b"x")
    path = write_manifest(backup, {"database": "db", "sha256": "abc"})
    assert path == manifest_path_for(backup) == tmp_path / ("db-20240501T120000Z.dump" + MANIFEST_SUFFIX)
    assert read_manifest(backup) == {"format_version": 1, "database": "db", "sha256": "abc"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [backup.name, path.name]  # no temp file left


def test_missing_or_foreign_manifest_is_an_error(tmp_path):
    backup = tmp_path / "db-20240501T120000Z.dump"
    backup.write_bytes(b"x")
    with pytest.raises(OperatorError, match="has no manifest"):
        read_manifest(backup)
    manifest_path_for(backup).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(OperatorError, match="not a release-migrations manifest"):
        read_manifest(backup)
    manifest_path_for(backup).write_text("{not json")
    with pytest.raises(OperatorError, match="Cannot read manifest"):
        read_manifest(backup)


def test_verify_checksum_accepts_intact_file(tmp_path):
    backup = make_backup(tmp_path, "db", T0, content=b"0123456789" * 100)
    assert verify_checksum(backup, read_manifest(backup)) == hashlib.sha256(b"0123456789" * 100).hexdigest()


def test_verify_checksum_refuses_flipped_byte(tmp_path):
    backup = make_backup(tmp_path, "db", T0, content=b"0123456789" * 100)
    data = bytearray(backup.read_bytes())
    data[500] ^= 0x01
    backup.write_bytes(bytes(data))
    with pytest.raises(OperatorError, match="checksum mismatch: backup .* was modified or truncated"):
        verify_checksum(backup, read_manifest(backup))


def test_verify_checksum_refuses_truncated_file(tmp_path):
    backup = make_backup(tmp_path, "db", T0, content=b"0123456789" * 100)
    with open(backup, "r+b") as handle:
        handle.truncate(10)
    with pytest.raises(OperatorError, match="checksum mismatch.*10 bytes on disk, 1000 in the manifest"):
        verify_checksum(backup, read_manifest(backup))


def test_verify_checksum_needs_a_recorded_sha(tmp_path):
    backup = make_backup(tmp_path, "db", T0)
    with pytest.raises(OperatorError, match="records no sha256"):
        verify_checksum(backup, {"database": "db"})


def test_directory_digest_is_sha_of_sorted_relpath_lines(tmp_path):
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "toc.dat").write_bytes(b"toc")
    (root / "sub" / "1.dat").write_bytes(b"one")
    overall, files = hash_directory(root, workers=3)
    assert files == {"sub/1.dat": hashlib.sha256(b"one").hexdigest(), "toc.dat": hashlib.sha256(b"toc").hexdigest()}
    lines = f"sub/1.dat:{files['sub/1.dat']}\ntoc.dat:{files['toc.dat']}\n"
    assert overall == hashlib.sha256(lines.encode()).hexdigest() == directory_digest(files)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / "3001.dat.gz").write_bytes(b"changed"), "changed: 3001.dat.gz"),
        (lambda d: (d / "3001.dat.gz").unlink(), "missing: 3001.dat.gz"),
        (lambda d: (d / "extra.dat").write_bytes(b"x"), "unexpected: extra.dat"),
    ],
)
def test_verify_checksum_of_directory_names_the_damaged_file(tmp_path, damage, expected):
    backup = make_backup(tmp_path, "db", T0, fmt="directory")
    verify_checksum(backup, read_manifest(backup))
    damage(backup)
    with pytest.raises(OperatorError, match=f"checksum mismatch.*{expected}"):
        verify_checksum(backup, read_manifest(backup))
