"""Which backups of a directory count: pg_backup's own, latest verified, retention, stale leftovers."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from ansible.module_utils.backup_catalog import (
    latest_verified,
    remove_backup,
    retention_victims,
    scan_backups,
    stale_partials,
)
from ansible.module_utils.backup_manifest import backup_name, iso, manifest_path_for, read_manifest, write_manifest
from test_backup_manifest import T0, make_backup


def test_latest_verified_picks_newest_verified_of_that_database(tmp_path):
    make_backup(tmp_path, "app", T0)
    newest_verified = make_backup(tmp_path, "app", T0 + timedelta(hours=1))
    make_backup(tmp_path, "app", T0 + timedelta(hours=2), verified=False)
    make_backup(tmp_path, "app", T0 + timedelta(hours=3), manifest=False)
    make_backup(tmp_path, "other", T0 + timedelta(hours=4))
    (tmp_path / (backup_name("app", T0 + timedelta(hours=5), "custom", True) + ".partial")).write_bytes(b"x")
    entries = scan_backups(tmp_path)
    assert [e.path.name for e in entries][0] == backup_name("other", T0 + timedelta(hours=4), "custom", True)
    assert latest_verified(entries, "app").path == newest_verified
    assert latest_verified(entries, "nobody") is None


def test_latest_verified_orders_by_manifest_finished_at_not_name(tmp_path):
    early_name = make_backup(tmp_path, "app", T0)
    late_name = make_backup(tmp_path, "app", T0 + timedelta(hours=1))
    data = read_manifest(early_name)
    data["finished_at"] = iso(T0 + timedelta(hours=2))  # a long backup that finished last
    write_manifest(early_name, data)
    assert latest_verified(scan_backups(tmp_path), "app").path == early_name
    assert late_name.exists()


def test_backup_without_existing_file_is_not_verified(tmp_path):
    gone = make_backup(tmp_path, "app", T0)
    gone.unlink()
    assert latest_verified(scan_backups(tmp_path), "app") is None


def test_retention_keeps_newest_n_of_same_database_only(tmp_path):
    paths = [make_backup(tmp_path, "app", T0 + timedelta(hours=h)) for h in range(4)]
    other = make_backup(tmp_path, "other", T0 - timedelta(days=30))
    victims = retention_victims(scan_backups(tmp_path), "app", keep=2, protect=(paths[3],))
    assert sorted(v.path for v in victims) == paths[:2]
    assert other not in [v.path for v in victims]
    assert retention_victims(scan_backups(tmp_path), "app", keep=0) == []


def test_retention_never_removes_newest_verified_nor_protected(tmp_path):
    verified = make_backup(tmp_path, "app", T0)
    unverified = [make_backup(tmp_path, "app", T0 + timedelta(hours=h), verified=False) for h in (1, 2)]
    victims = retention_victims(scan_backups(tmp_path), "app", keep=1, protect=(unverified[1],))
    assert [v.path for v in victims] == [unverified[0]]
    assert verified.exists()


def test_retention_never_counts_nor_removes_files_pg_backup_did_not_write(tmp_path):
    """A file named like a backup, or a directory with someone's notes, has no manifest naming it: not ours."""
    orphan = make_backup(tmp_path, "app", T0, manifest=False)
    notes = tmp_path / backup_name("app", T0 + timedelta(minutes=1), "directory", True)
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    renamed = make_backup(tmp_path, "app", T0 + timedelta(minutes=2))
    manifest = read_manifest(renamed)
    manifest["path"] = "app-20000101T000000Z.dump"  # a copy under another name: the manifest names another file
    write_manifest(renamed, manifest)
    mine = [make_backup(tmp_path, "app", T0 + timedelta(hours=h)) for h in (1, 2, 3)]
    victims = retention_victims(scan_backups(tmp_path), "app", keep=1)
    assert sorted(v.path for v in victims) == mine[:2]
    assert {orphan, notes, renamed}.isdisjoint(v.path for v in victims)
    assert latest_verified(scan_backups(tmp_path), "app").path == mine[2]


def test_a_manifest_naming_another_database_than_the_file_name_is_not_ours(tmp_path):
    """`latest` trusts the file name: a manifest claiming another database does not make it that one's backup."""
    lying = make_backup(tmp_path, "other", T0 + timedelta(hours=5))
    manifest = read_manifest(lying)
    manifest["database"] = "app"
    write_manifest(lying, manifest)
    honest = make_backup(tmp_path, "app", T0)
    entries = scan_backups(tmp_path)
    assert latest_verified(entries, "app").path == honest
    assert latest_verified(entries, "other") is None
    assert retention_victims(entries, "other", keep=1) == []


def test_protected_backups_survive_retention_whatever_their_age(tmp_path):
    oldest = make_backup(tmp_path, "app", T0)
    for h in range(1, 6):
        make_backup(tmp_path, "app", T0 + timedelta(hours=h))
    victims = retention_victims(scan_backups(tmp_path), "app", keep=2, protect=(str(oldest),))
    assert oldest not in [v.path for v in victims] and len(victims) == 3


def test_remove_backup_deletes_backup_and_manifest(tmp_path):
    backup = make_backup(tmp_path, "app", T0, fmt="directory")
    entry = scan_backups(tmp_path)[0]
    removed = remove_backup(entry)
    assert removed == [str(manifest_path_for(backup)), str(backup)]
    assert list(tmp_path.iterdir()) == []


def test_stale_partials_are_old_partials_of_that_database_only(tmp_path):
    old = tmp_path / (backup_name("app", T0, "custom", True) + ".partial")
    fresh = tmp_path / (backup_name("app", T0 + timedelta(hours=1), "directory", True) + ".partial")
    other = tmp_path / (backup_name("other", T0, "custom", True) + ".partial")
    foreign = tmp_path / (backup_name("app", T0 + timedelta(hours=2), "plain", False) + ".partial")
    old.write_bytes(b"PGDMP\x01")
    other.write_bytes(b"PGDMP\x01")
    foreign.write_text("an operator's notes, not pg_dump output")
    fresh.mkdir()
    (fresh / "toc.dat").write_bytes(b"x")
    os.utime(foreign, (time.time() - 7200, time.time() - 7200))
    two_hours_ago = time.time() - 7200
    for p in (old, other, fresh):
        os.utime(p, (two_hours_ago, two_hours_ago))  # fresh's file inside is still new
    assert stale_partials(tmp_path, "app") == [old]
    assert stale_partials(tmp_path, "app", now=time.time() + 7200) == sorted([old, fresh])


def test_latest_is_never_a_pre_restore_copy_and_prefers_the_targets_server(tmp_path):
    from ansible.module_utils.backup_catalog import Server

    ours = make_backup(tmp_path, "app", T0)
    copy = make_backup(tmp_path, "app", T0 + timedelta(hours=1))
    data = read_manifest(copy)
    data["label"] = "pre_restore"
    write_manifest(copy, data)
    theirs = make_backup(tmp_path, "app", T0 + timedelta(hours=2))
    data = read_manifest(theirs)
    data["system_identifier"] = "222"
    write_manifest(theirs, data)
    data = read_manifest(ours)
    data["system_identifier"] = "111"
    write_manifest(ours, data)
    entries = scan_backups(tmp_path)
    assert latest_verified(entries, "app").path == theirs
    assert latest_verified(entries, "app", prefer_server=Server("111", None)).path == ours
    assert latest_verified(entries, "app", server=Server("333", None)) is None
    assert retention_victims(entries, "app", keep=1, server=Server("111", None)) == []


def test_a_binary_backups_partial_directory_counts_only_when_it_holds_nothing_but_its_own_files(tmp_path):
    ours = tmp_path / (backup_name("app", T0, "binary", True) + ".partial")
    theirs = tmp_path / (backup_name("app", T0 + timedelta(hours=1), "binary", True) + ".partial")
    for root in (ours, theirs):
        (root / "rows").mkdir(parents=True)
        (root / "schema.sql.gz").write_bytes(b"\x1f\x8b")
        (root / "rows" / "0001.copy.gz").write_bytes(b"\x1f\x8b")
    (theirs / "notes.txt").write_text("an operator's file")
    old = time.time() - 7200
    for path in (ours, theirs, *ours.rglob("*"), *theirs.rglob("*")):
        os.utime(path, (old, old))

    assert stale_partials(tmp_path, "app") == [ours]
