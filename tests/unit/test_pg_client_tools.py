"""Client tool discovery, version checks and compression parsing (fake tools in a temp dir, no server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible.module_utils import pg_client_tools as tools
from ansible.module_utils.operator_error import OperatorError
from ansible.module_utils.pg_client_tools import (
    ClientTools,
    Compression,
    check_compression,
    compression_supported,
    find_client_tools,
    parse_client_version,
    parse_compression,
    pg_dump_compression_args,
    select_client,
)


def fake_bin(root: Path, name: str, version_line: str, probe_stderr: str = "") -> str:
    """A bin dir whose pg_dump prints ``version_line`` for --version and ``probe_stderr`` otherwise."""
    bin_dir = root / name
    bin_dir.mkdir(parents=True)
    script = (
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "{version_line}"; exit 0; fi\n'
        f'echo "{probe_stderr}" >&2; exit 1\n'
    )
    for tool in ("pg_dump", "pg_restore", "psql"):
        (bin_dir / tool).write_text(script)
        (bin_dir / tool).chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pg_dump (PostgreSQL) 16.2", (16, "16.2")),
        ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", (15, "15.20")),
        ("pg_dump (PostgreSQL) 9.6.24", (9, "9.6.24")),
        ("psql (PostgreSQL) 17beta1", (17, "17")),
    ],
)
def test_parse_client_version_reads_major_and_full(text, expected):
    assert parse_client_version(text) == expected


def test_parse_client_version_rejects_text_without_version():
    with pytest.raises(OperatorError, match="Cannot read a PostgreSQL version"):
        parse_client_version("bash: pg_dump: command not found")


def test_select_client_takes_first_at_least_as_new_as_server():
    cands = [("/a", (15, "15.20")), ("/missing", None), ("/b", (16, "16.2")), ("/c", (17, "17.0"))]
    assert select_client(cands, 16) == ("/b", (16, "16.2"))
    assert select_client(cands, 15) == ("/a", (15, "15.20"))
    assert select_client(cands, 18) is None


def test_explicit_pg_bin_dir_older_than_server_names_both_versions_and_fix(tmp_path):
    old = fake_bin(tmp_path, "15", "pg_dump (PostgreSQL) 15.19")
    with pytest.raises(OperatorError) as err:
        find_client_tools(16, "16.2", old)
    text = str(err.value)
    assert "pg_dump 15.19" in text and "older than the server 16.2" in text
    assert "pg_bin_dir" in err.value.hint and "postgresql-client-16" in err.value.hint


def test_explicit_pg_bin_dir_new_enough_is_used(tmp_path):
    new = fake_bin(tmp_path, "17", "pg_dump (PostgreSQL) 17.1")
    assert find_client_tools(16, "16.2", new) == ClientTools(bin_dir=new, version="17.1", major=17)


def test_explicit_pg_bin_dir_without_pg_dump_is_refused(tmp_path):
    with pytest.raises(OperatorError, match="No working pg_dump"):
        find_client_tools(16, "16.2", str(tmp_path))


def test_minimum_major_of_the_archive_also_applies(tmp_path):
    client16 = fake_bin(tmp_path, "16", "pg_dump (PostgreSQL) 16.2")
    with pytest.raises(OperatorError, match="older than the server 15.4 and the pg_dump 17.0"):
        find_client_tools(15, "15.4", client16, minimum_major=17, why="and the pg_dump 17.0 that wrote the backup")


def test_search_skips_old_clients_and_picks_new_enough(tmp_path, monkeypatch):
    old = fake_bin(tmp_path, "15", "pg_dump (PostgreSQL) 15.19")
    new = fake_bin(tmp_path, "16", "pg_dump (PostgreSQL) 16.2")
    monkeypatch.setattr(tools, "candidate_bin_dirs", lambda *_: [old, new])
    assert find_client_tools(16, "16.2").bin_dir == new
    assert find_client_tools(15, "15.4").bin_dir == old


def test_search_without_new_enough_client_lists_what_it_found(tmp_path, monkeypatch):
    old = fake_bin(tmp_path, "15", "pg_dump (PostgreSQL) 15.19")
    monkeypatch.setattr(tools, "candidate_bin_dirs", lambda *_: [old])
    with pytest.raises(OperatorError) as err:
        find_client_tools(16, "16.2")
    assert "pg_dump 15.19 is older than the server 16.2" in str(err.value)
    assert old in str(err.value)
    assert "postgresql-client-16" in err.value.hint


def test_candidate_bin_dirs_puts_path_first_and_debian_newest_first(tmp_path, monkeypatch):
    on_path = fake_bin(tmp_path, "onpath", "pg_dump (PostgreSQL) 14.1")
    monkeypatch.setattr(tools, "_embedded_bin_dir", lambda: "/embedded/bin")
    monkeypatch.setattr(tools.glob, "glob", lambda pattern: ["/usr/lib/postgresql/9.6/bin",
                                                            "/usr/lib/postgresql/15/bin",
                                                            "/usr/lib/postgresql/16/bin"])
    assert tools.candidate_bin_dirs(path_env=on_path) == [
        on_path, "/embedded/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin",
        "/usr/lib/postgresql/9.6/bin",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Compression("gzip", 1)),
        ("", Compression("gzip", 1)),
        ("none", Compression("none")),
        (0, Compression("none")),
        ("0", Compression("none")),
        (6, Compression("gzip", 6)),
        ("gzip", Compression("gzip")),
        ("gzip:9", Compression("gzip", 9)),
        ("GZIP:level=3", Compression("gzip", 3)),
        ("lz4", Compression("lz4")),
        ("lz4:4", Compression("lz4", 4)),
        ("zstd:19", Compression("zstd", 19)),
        ("gzip:0", Compression("none")),
    ],
)
def test_parse_compression_accepts_documented_forms(value, expected):
    assert parse_compression(value) == expected


@pytest.mark.parametrize("value", ["brotli", "gzip:10", "zstd:23", "gzip:x", "10", "none:3", "lz4:13"])
def test_parse_compression_rejects_bad_values(value):
    with pytest.raises(OperatorError):
        parse_compression(value)


def test_compression_spec_is_canonical():
    assert Compression("gzip", 1).spec == "gzip:1"
    assert Compression("zstd").spec == "zstd"
    assert Compression("none").spec == "none"


def test_pg_dump_compression_args_follow_client_version():
    assert pg_dump_compression_args(Compression("gzip", 3), 16, "custom") == ["-Z", "gzip:3"]
    assert pg_dump_compression_args(Compression("gzip", 3), 15, "custom") == ["-Z", "3"]
    assert pg_dump_compression_args(Compression("gzip"), 15, "directory") == ["-Z", "6"]
    assert pg_dump_compression_args(Compression("none"), 15, "custom") == ["-Z", "0"]
    assert pg_dump_compression_args(Compression("zstd", 3), 16, "directory") == ["-Z", "zstd:3"]
    assert pg_dump_compression_args(Compression("gzip", 3), 16, "plain") == []
    with pytest.raises(OperatorError, match="needs pg_dump 16"):
        pg_dump_compression_args(Compression("lz4"), 15, "custom")


def test_tar_and_plain_refuse_what_they_cannot_compress():
    client = ClientTools("/nowhere", "16.2", 16)
    with pytest.raises(OperatorError, match="tar format cannot be compressed"):
        check_compression(Compression("gzip", 1), "tar", client)
    with pytest.raises(OperatorError, match="plain format is compressed by gzip only"):
        check_compression(Compression("zstd"), "plain", client)
    check_compression(Compression("none"), "tar", client)
    check_compression(Compression("gzip", 9), "plain", client)


def test_build_without_lz4_is_detected_by_probe(tmp_path):
    no_lz4 = fake_bin(tmp_path, "nolz4", "pg_dump (PostgreSQL) 16.2",
                      "pg_dump: error: invalid compression specification: this build does not support compression "
                      "with LZ4")
    client = ClientTools(no_lz4, "16.2", 16)
    assert compression_supported(client, "lz4") is False
    with pytest.raises(OperatorError, match="built without lz4 support"):
        check_compression(Compression("lz4"), "custom", client)


def test_build_with_zstd_passes_probe(tmp_path):
    with_zstd = fake_bin(tmp_path, "zstd", "pg_dump (PostgreSQL) 16.2",
                         "pg_dump: error: connection to server on socket failed: No such file or directory")
    client = ClientTools(with_zstd, "16.2", 16)
    assert compression_supported(client, "zstd") is True
    check_compression(Compression("zstd", 3), "directory", client)


def test_probe_never_sees_connection_settings(tmp_path, monkeypatch):
    """The probe must not connect anywhere: no PGHOST/PGPASSWORD reach it."""
    bin_dir = tmp_path / "spy"
    bin_dir.mkdir()
    out = tmp_path / "env.txt"
    (bin_dir / "pg_dump").write_text(f"#!/bin/sh\nenv > {out}\nexit 1\n")
    (bin_dir / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PGPASSWORD", "should-not-leak")
    monkeypatch.setenv("PGHOST", "db.example")
    compression_supported(ClientTools(str(bin_dir), "16.2", 16), "zstd")
    seen = out.read_text()
    assert "should-not-leak" not in seen and "PGHOST=" not in seen


def test_embedded_build_reports_lz4_unsupported_clearly():
    """The pgserver build has no lz4: detected before any dump (skip where that build is absent)."""
    embedded = tools._embedded_bin_dir()
    if not embedded or not os.path.exists(os.path.join(embedded, "pg_dump")):
        pytest.skip("embedded pgserver client tools not installed")
    version = tools.client_version(embedded)
    client = ClientTools(embedded, version[1], version[0])
    if compression_supported(client, "lz4"):
        pytest.skip("this pgserver build supports lz4")
    with pytest.raises(OperatorError, match="built without lz4 support"):
        check_compression(Compression("lz4"), "custom", client)
