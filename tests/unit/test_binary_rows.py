"""The binary format's names, patterns and scripts (module_utils/binary_rows.py); no database needed."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.binary_rows import BinaryTable, exclude_pattern, read_rows, rows_index, rows_script
from ansible.module_utils.operator_error import OperatorError


@pytest.mark.parametrize(("quoted", "pattern"), [
    ("public.deployments", '"public"."deployments"'),
    ('"My Schema"."Odd ""Name"""', '"My Schema"."Odd ""Name"""'),
    ('public."a.b*?"', '"public"."a.b*?"'),  # a dot, * and ? inside quotes match themselves in pg_dump
    ('"x""".y', '"x"""."y"'),
])
def test_a_quoted_name_becomes_the_pg_dump_pattern_of_exactly_that_table(quoted, pattern):
    assert exclude_pattern(quoted) == pattern


def test_pieces_are_page_ranges_that_cover_the_table_and_the_last_one_is_open():
    table = BinaryTable("public.t", ['"Weird Col"', "id"])
    assert table.select((0, 8)) == ("COPY (SELECT \"Weird Col\", id FROM ONLY public.t WHERE ctid < '(8,0)'::tid) "
                                    "TO STDOUT (FORMAT binary)")
    assert "ctid >= '(8,0)'::tid) TO" in table.select((8, None))
    assert table.copy_in == 'COPY public.t ("Weird Col", id) FROM STDIN (FORMAT binary)'
    assert BinaryTable("public.empty", []).copy_in == "COPY public.empty FROM STDIN (FORMAT binary)"


def test_rows_json_and_rows_psql_name_the_same_files(tmp_path):
    table = BinaryTable('"S"."T"', ["id"], files=["rows/0001.copy.gz", "rows/0002.copy.gz"])
    (tmp_path / "rows").mkdir()
    for file in table.files:
        (tmp_path / file).write_bytes(b"")
    (tmp_path / "rows.json").write_text(json.dumps(rows_index([table], "UTF8")))

    read = read_rows(tmp_path)

    assert [(t.name, t.columns, t.files) for t in read.tables] == [('"S"."T"', ["id"], table.files)]
    script = rows_script(read.tables, read.encoding).splitlines()
    assert script[1] == "SET client_encoding = 'UTF8';"
    assert script[2:] == [f"\\copy \"S\".\"T\" (id) FROM PROGRAM 'gzip -dc {f}' WITH (FORMAT binary)"
                          for f in table.files]


def test_rows_json_that_names_a_missing_file_is_refused(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(rows_index(
        [BinaryTable("public.t", ["id"], files=["rows/0001.copy.gz"])], "UTF8")))
    with pytest.raises(OperatorError, match="not this backup's: rows/0001.copy.gz"):
        read_rows(tmp_path)
    (tmp_path / "rows.json").write_text("{")
    with pytest.raises(OperatorError, match="Cannot read"):
        read_rows(tmp_path)
