"""The migration lint on offline SQL, revision by revision: squawk (the real binary) and our rules on pglast."""

from __future__ import annotations

import pytest
from ansible.module_utils.lint_rules import REFUSED, RULES
from ansible.module_utils.migration_lint import describe, lint_plan, squawk_pg_version


def rev(revision: str, sql: str, *, downgrade: str = "ok") -> dict:
    return {"revision": revision, "sql": sql, "path": f"versions/{revision}.py", "downgrade": downgrade}


def per_revision(revision: str, body: str) -> dict:
    """A revision's SQL as Alembic renders it with one transaction per revision."""
    return rev(revision, f"BEGIN;\n\n-- Running upgrade x -> {revision}\n\n{body}\n\n"
                         f"UPDATE alembic_version SET version_num='{revision}' WHERE alembic_version.version_num = 'x';"
                         "\n\nCOMMIT;\n")


def rules(result: dict, revision: str | None = None) -> list[str]:
    return [f["rule"] for f in result["findings"] if revision is None or f["revision"] == revision]


def test_every_finding_names_its_revision_line_statement_why_and_fix():
    result = lint_plan([per_revision("aaaa1", "SELECT 1;"),
                        per_revision("bbbb2", "CREATE INDEX ix_users_name ON users (name);")])
    [finding] = result["findings"]
    assert finding["revision"] == "bbbb2" and finding["path"] == "versions/bbbb2.py"
    assert finding["rule"] == "require-concurrent-index-creation" and finding["source"] == "squawk"
    assert finding["line"] == 5 and finding["statement"] == "CREATE INDEX ix_users_name ON users (name)"
    assert "blocks every write" in finding["why"] and "postgresql_concurrently=True" in finding["fix"]
    assert finding["severity"] == "error" and finding["blocking"] is True
    assert result["blocking"] == [finding] and result["squawk_version"].startswith("2.")
    assert "bbbb2 (versions/bbbb2.py) line 5: [require-concurrent-index-creation]" in describe(result)


def test_tables_created_earlier_in_the_plan_are_new_and_empty():
    result = lint_plan([
        per_revision("aaaa1", "CREATE TABLE audit (id bigint PRIMARY KEY, note text);"),
        per_revision("bbbb2", "CREATE INDEX ix_audit_note ON audit (note);\n"
                              "ALTER TABLE audit ADD COLUMN code text NOT NULL;\n"
                              "UPDATE audit SET note = lower(note);"),
    ])
    assert result["blocking"] == [], rules(result)


def test_the_apply_paths_timeouts_and_alembics_own_statements_are_never_findings():
    result = lint_plan([rev("aaaa1", "BEGIN;\nCREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                                     "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));\n"
                                     "ALTER TABLE users ADD COLUMN note text;\n"
                                     "INSERT INTO alembic_version (version_num) VALUES ('aaaa1');\nCOMMIT;\n")])
    assert not {"require-lock-timeout", "require-statement-timeout", "prefer-robust-stmts", "transaction-nesting",
                "prefer-text-field", "ban-uncommitted-transaction"} & set(rules(result))
    assert result["findings"] == []


def test_autocommit_blocks_run_outside_the_transaction():
    inside = per_revision("aaaa1", "CREATE INDEX CONCURRENTLY ix ON users (name);")
    outside = per_revision("bbbb2", "COMMIT;\n\nCREATE INDEX CONCURRENTLY ix2 ON users (name);\n\nBEGIN;")
    result = lint_plan([inside, outside])
    assert rules(result, "aaaa1") == ["ban-concurrent-index-creation-in-transaction"]
    assert rules(result, "bbbb2") == []


def test_one_transaction_for_the_whole_plan_is_followed_across_revisions():
    """Without transaction_per_migration Alembic opens one BEGIN before the first revision: the second
    revision starts inside it, so its CONCURRENTLY is refused and its DROP INDEX CONCURRENTLY too."""
    first = rev("aaaa1", "BEGIN;\n\n-- Running upgrade  -> aaaa1\n\nALTER TABLE users ADD COLUMN note text;\n")
    second = rev("bbbb2", "-- Running upgrade aaaa1 -> bbbb2\n\nCREATE INDEX CONCURRENTLY ix ON users (note);\n"
                          "DROP INDEX CONCURRENTLY ix_old;\n\nCOMMIT;\n")
    result = lint_plan([first, second])
    assert rules(result, "bbbb2") == ["ban-concurrent-index-creation-in-transaction", "not-in-transaction"]
    assert all(f["refused"] for f in result["blocking"])


def test_update_limit_and_commit_in_a_do_block_are_named():
    do_block = ("DO $$\nBEGIN\n  FOR counter IN 1..10 LOOP\n    UPDATE users SET name = 'x' WHERE name IS NULL "
                "LIMIT 100000;\n    COMMIT;\n  END LOOP;\nEND $$;")
    result = lint_plan([per_revision("aaaa1", do_block), per_revision("bbbb2", "UPDATE users SET name = 'y' LIMIT 5;")])
    assert rules(result, "aaaa1") == ["commit-in-do-block", "update-limit"]
    assert rules(result, "bbbb2") == ["update-limit"]


def test_a_do_block_that_commits_outside_a_transaction_is_fine_and_its_unbatched_writes_are_not():
    body = "DO $$ BEGIN UPDATE users SET name = lower(name); COMMIT; END $$;"
    inside = lint_plan([per_revision("aaaa1", body)])
    outside = lint_plan([per_revision("aaaa1", f"COMMIT;\n{body}\nBEGIN;")])
    assert rules(inside) == ["commit-in-do-block", "unbatched-write"]
    assert rules(outside) == ["unbatched-write"]


@pytest.mark.parametrize(("statement", "flagged"), [
    ("UPDATE users SET name = lower(name);", True),
    ("UPDATE users SET status = 'active' WHERE status IS NULL;", True),
    ("DELETE FROM users WHERE email IS NOT NULL AND name IS NULL;", True),
    ("UPDATE users u SET name = s.name FROM staging s WHERE u.id = s.id;", True),
    ("UPDATE users SET status = 'active' WHERE id > 0 AND id <= 1000 AND status IS NULL;", False),
    ("UPDATE users SET status = 'active' WHERE id BETWEEN 1 AND 1000;", False),
    ("DELETE FROM users WHERE id IN (SELECT id FROM users WHERE name IS NULL ORDER BY id LIMIT 1000);", False),
])
def test_a_write_is_unbatched_when_nothing_bounds_its_rows(statement, flagged):
    assert ("unbatched-write" in rules(lint_plan([per_revision("aaaa1", statement)]))) is flagged


def test_statements_postgresql_cannot_parse_are_errors_with_its_message():
    [finding] = lint_plan([per_revision("aaaa1", "ALTER TABLE users ADD COLUMN;")])["findings"]
    assert finding["rule"] == "syntax-error" and "syntax error" in finding["detail"] and finding["refused"]


def test_table_rewrites_and_explicit_locks():
    result = lint_plan([per_revision("aaaa1", "VACUUM FULL users;\nCLUSTER users USING users_pkey;\n"
                                              "LOCK TABLE users IN ACCESS EXCLUSIVE MODE;")])
    assert rules(result) == ["not-in-transaction", "table-rewrite", "table-rewrite", "lock-table"]


def test_a_revision_without_a_real_downgrade_is_a_warning_on_the_way_up_only():
    revisions = [per_revision("aaaa1", "SELECT 1;") | {"downgrade": "raises"},
                 per_revision("bbbb2", "SELECT 1;") | {"downgrade": "empty"}]
    up = lint_plan(revisions)
    assert [(f["revision"], f["rule"], f["severity"]) for f in up["findings"]] == [
        ("aaaa1", "downgrade-missing", "warn"), ("bbbb2", "downgrade-missing", "warn")]
    assert lint_plan(revisions, direction="down")["findings"] == []


def test_the_environment_maps_severities_and_says_what_blocks():
    plan = [per_revision("aaaa1", "CREATE INDEX ix ON users (name);\nALTER TABLE users DROP COLUMN nickname;")]
    default = lint_plan(plan)
    assert [(f["rule"], f["severity"], f["blocking"]) for f in default["findings"]] == [
        ("require-concurrent-index-creation", "error", True), ("ban-drop-column", "warn", False)]
    laptop = lint_plan(plan, blocking=["refused"])
    assert laptop["blocking"] == [] and laptop["counts"] == {"error": 1, "warn": 1, "info": 0}
    strict = lint_plan(plan, severity={"ban-drop-column": "error", "require-concurrent-index-creation": "off"})
    assert [f["rule"] for f in strict["blocking"]] == ["ban-drop-column"] and len(strict["findings"]) == 1
    refused = lint_plan([per_revision("aaaa1", "UPDATE users SET name = 'x' LIMIT 1;")],
                        severity={"update-limit": "info"}, blocking=["refused"])
    assert [f["rule"] for f in refused["blocking"]] == ["update-limit"]


def test_a_reviewed_exception_lets_one_revisions_finding_through_and_says_so():
    plan = [per_revision("aaaa1234", "CREATE INDEX ix ON users (name);"),
            per_revision("bbbb5678", "CREATE INDEX ix2 ON users (email);")]
    result = lint_plan(plan, accept=["aaaa:require-concurrent-index-creation", "cccc:ban-drop-table", "a:x"])
    assert [f["revision"] for f in result["accepted"]] == ["aaaa1234"]
    assert result["accepted"][0]["accepted"] == "aaaa:require-concurrent-index-creation"
    assert [f["revision"] for f in result["blocking"]] == ["bbbb5678"]
    assert result["unused_accepts"] == ["cccc:ban-drop-table", "a:x"]  # too short a prefix never matches
    assert "1 accepted" in describe(result)


def test_rules_that_depend_on_the_servers_version():
    plan = [per_revision("aaaa1", "ALTER TABLE users ADD COLUMN status text NOT NULL DEFAULT 'x';")]
    assert rules(lint_plan(plan, pg_version="15.4")) == []
    assert "adding-field-with-default" in rules(lint_plan(plan, pg_version="10.0"))


@pytest.mark.parametrize(("given", "expected"), [
    ("15.4", "15.4"), ("15", "15.0"), (150004, "15.4"), ("16.2 (Debian 16.2-1)", "16.2"), ("", None), (None, None),
    ("banana", None)])
def test_the_server_version_reaches_squawk_as_it_reads_it(given, expected):
    assert squawk_pg_version(given) == expected


def test_every_rule_has_a_severity_a_why_a_fix_and_an_example():
    for name, (source, severity, why, fix, example) in RULES.items():
        assert source in ("squawk", "release-migrations") and severity in ("error", "warn", "info"), name
        assert why.endswith(".") and fix and example, name
    assert set(RULES) >= REFUSED
    assert all(RULES[name][1] == "error" for name in REFUSED)
