"""SQL text as PostgreSQL reads it (module_utils/sql_text.py): statements and masked literals."""

import pytest
from ansible.module_utils.sql_text import mask_sql_secrets, split_statements, split_with_lines


@pytest.mark.parametrize("sql, count", [
    ("SELECT 1", 1),
    ("SELECT 1;", 1),
    ("  ;; SELECT 1 ; ; ", 1),
    ("SELECT 1; SELECT 2", 2),
    ("COMMIT; DELETE FROM users", 2),
    ("SELECT ';' AS semi", 1),
    ("SELECT 'it''s; fine'", 1),
    ("SELECT E'a\\'; b'", 1),
    ('SELECT 1 AS "odd;name"', 1),
    ("SELECT $$;$$, $tag$ ; $$ ; $tag$", 1),
    ("SELECT 1 -- trailing; comment\n", 1),
    ("SELECT 1 /* a; /* nested; */ still; */", 1),
    ("-- only a comment", 0),
    ("", 0),
    ("SELECT a$b FROM t; SELECT 2", 2),
])
def test_split_statements_counts_top_level_statements(sql, count):
    assert len(split_statements(sql)) == count


def test_mask_sql_secrets_hides_every_literal_and_truncates():
    assert mask_sql_secrets("ALTER ROLE app PASSWORD 'S3cr3t'") == "ALTER ROLE app PASSWORD '********'"
    for secret in ("E'Rot8ed\\'S3cret'", "U&'Rot8edS3cret'", "$p$Rot8edS3cret$p$", "$$Rot8edS3cret$$",
                   "'it''s Rot8edS3cret'"):
        masked = mask_sql_secrets(f"alter role r password {secret}; select 1 where a = 'b'")
        assert "Rot8ed" not in masked and "S3cret" not in masked and masked.endswith("where a = '********'")
    assert mask_sql_secrets("select * from users where id = $1") == "select * from users where id = $1"
    assert mask_sql_secrets(None) is None
    assert len(mask_sql_secrets("x" * 2000)) == 500


def test_statements_carry_the_line_they_start_on():
    text = "-- header\nCREATE TABLE t (id int);\n\nDO $body$ BEGIN\n  COMMIT;\nEND $body$;\nSELECT 1"
    assert [line for line, _ in split_with_lines(text)] == [2, 4, 7]
