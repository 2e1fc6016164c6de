"""The SQL lint on offline previews: the runbook's mistakes are errors, risky operations warnings."""

from __future__ import annotations

from ansible.module_utils.sql_lint import lint_sql


def rules(sql: str) -> dict[str, str]:
    return {f["rule"]: f["severity"] for f in lint_sql(sql)}


def test_concurrent_index_inside_a_transaction_is_an_error():
    sql = "BEGIN;\nCREATE INDEX CONCURRENTLY ix_d_status ON deployments (status);\nCOMMIT;\n"
    assert rules(sql) == {"concurrently-in-transaction": "error"}


def test_concurrent_index_in_an_autocommit_block_is_fine():
    sql = (
        "BEGIN;\nSELECT 1;\nCOMMIT;\nCREATE INDEX CONCURRENTLY ix_d_status ON deployments (status);\nBEGIN;\nCOMMIT;\n"
    )
    assert rules(sql) == {}


def test_update_limit_and_commit_in_do_block_are_errors():
    sql = (
        "BEGIN;\nDO $$\nBEGIN\n  FOR counter IN 1..10 LOOP\n"
        "    UPDATE large_table SET c = 'x' WHERE c IS NULL LIMIT 100000;\n"
        "    COMMIT;\n  END LOOP;\nEND $$;\nCOMMIT;\n"
    )
    found = rules(sql)
    assert found["update-limit"] == "error"
    assert found["commit-in-do-block"] == "error"


def test_plain_index_on_an_existing_table_warns_but_not_on_a_new_one():
    assert rules("CREATE INDEX ix_u ON users (email);") == {"index-not-concurrent": "warn"}
    assert rules("CREATE TABLE t (id int);\nCREATE INDEX ix_t ON t (id);") == {}


def test_set_not_null_warns_unless_a_validated_check_proves_it():
    assert rules("ALTER TABLE deployments ALTER COLUMN status SET NOT NULL;") == {"set-not-null-scan": "warn"}
    proven = (
        "ALTER TABLE deployments ADD CONSTRAINT ck CHECK (status IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE deployments VALIDATE CONSTRAINT ck;\n"
        "ALTER TABLE deployments ALTER COLUMN status SET NOT NULL;"
    )
    assert "set-not-null-scan" not in rules(proven)


def test_destructive_and_rewriting_operations_warn():
    found = rules(
        "ALTER TABLE users DROP COLUMN nickname;\nDROP TABLE old;\nALTER TABLE users ALTER COLUMN name TYPE text;\n"
        "ALTER TABLE users ADD COLUMN status VARCHAR(20) NOT NULL;\nUPDATE users SET name = 'x';\n"
        "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (r) REFERENCES r (id);"
    )
    for rule in (
        "drop-column",
        "drop-table",
        "alter-type",
        "add-not-null-without-default",
        "whole-table-write",
        "foreign-key-validation",
    ):
        assert found[rule] == "warn", rule


def test_add_column_with_default_and_versions_table_updates_are_quiet():
    sql = (
        "ALTER TABLE users ADD COLUMN email_verified BOOLEAN DEFAULT false NOT NULL;\n"
        "UPDATE alembic_version SET version_num='b' WHERE alembic_version.version_num = 'a';"
    )
    assert rules(sql) == {}


def test_findings_carry_line_numbers():
    finding = lint_sql("-- comment\n\nBEGIN;\nDROP TABLE x;\nCOMMIT;")[0]
    assert finding["line"] == 4 and finding["statement"] == "DROP TABLE x"


def test_a_commit_inside_a_tagged_dollar_quoted_do_block_is_found():
    sql = "BEGIN;\nDO $body$\nBEGIN\n  UPDATE t SET a = 1;\n  COMMIT;\nEND\n$body$;\nCOMMIT;"
    rules = [f["rule"] for f in lint_sql(sql)]
    assert "commit-in-do-block" in rules
