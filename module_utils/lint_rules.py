"""The migration linter's rules: each rule's default severity, why it hurts a live PostgreSQL, the safe pattern.

Rules come from two places: ``squawk`` (the PostgreSQL migration linter, run on each revision's offline SQL)
and our own (``release-migrations``), on PostgreSQL's own parser (``pglast``), for what squawk does not check.

Severities: ``error`` (production and staging refuse to run it), ``warn`` (a person should look), ``info``
(style). An environment can change any rule's severity (``rm_lint_severity``) or turn it ``off``, and says
which severities block (``rm_lint_blocking``; ``refused`` names the statements PostgreSQL refuses as written).
"""

from __future__ import annotations

SQUAWK = "squawk"
OURS = "release-migrations"

# squawk rules that never run: our apply path sets lock_timeout and statement_timeout on its session, and
# Alembic writes the transaction statements itself (BEGIN/COMMIT around revisions and autocommit blocks).
SQUAWK_EXCLUDED = (
    "require-lock-timeout", "require-statement-timeout", "require-timeout-settings", "prefer-robust-stmts",
    "transaction-nesting", "ban-uncommitted-transaction",
)

_AUTOCOMMIT = "inside `with op.get_context().autocommit_block():`"

# rule: (source, default severity, why it hurts a live PostgreSQL, the safe pattern, an example it catches)
RULES: dict[str, tuple[str, str, str, str, str]] = {
    "require-concurrent-index-creation": (
        SQUAWK, "error",
        "CREATE INDEX on an existing table blocks every write to it until the whole index is built.",
        f"op.create_index(..., postgresql_concurrently=True) {_AUTOCOMMIT}.",
        "CREATE INDEX ix_deployments_status ON deployments (status);"),
    "ban-concurrent-index-creation-in-transaction": (
        SQUAWK, "error",
        "PostgreSQL refuses CREATE INDEX CONCURRENTLY inside a transaction block, and Alembic runs revisions in one.",
        f"Build the index {_AUTOCOMMIT}.",
        "BEGIN; CREATE INDEX CONCURRENTLY ix ON deployments (status); COMMIT;"),
    "adding-required-field": (
        SQUAWK, "error",
        "A NOT NULL column without a default fails on a table that has rows (and the run with it).",
        "Add the column nullable (or with a constant server_default), backfill in batches, then enforce NOT NULL.",
        "ALTER TABLE users ADD COLUMN code text NOT NULL;"),
    "adding-not-nullable-field": (
        SQUAWK, "error",
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock: reads and writes wait.",
        "Add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later statement, then SET NOT NULL (no scan).",
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"),
    "constraint-missing-not-valid": (
        SQUAWK, "error",
        "Adding a constraint scans the whole table while blocking its writes.",
        "Add it NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later statement (writes continue).",
        "ALTER TABLE users ADD CONSTRAINT ck_age CHECK (age > 0);"),
    "adding-foreign-key-constraint": (
        SQUAWK, "error",
        "A new foreign key scans the table while blocking writes to it and to the table it references.",
        "op.create_foreign_key(..., postgresql_not_valid=True), then VALIDATE CONSTRAINT in a later statement.",
        "ALTER TABLE deployments ADD CONSTRAINT fk FOREIGN KEY (release_id) REFERENCES releases (id);"),
    "disallowed-unique-constraint": (
        SQUAWK, "error",
        "ADD CONSTRAINT ... UNIQUE builds an index under an ACCESS EXCLUSIVE lock: reads and writes wait.",
        "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... UNIQUE USING INDEX.",
        "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE (email);"),
    "adding-field-with-default": (
        SQUAWK, "error",
        "A volatile default (or a generated column) rewrites the whole table under an ACCESS EXCLUSIVE lock.",
        "Add the column nullable, backfill in batches, then set the default for new rows.",
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();"),
    "adding-serial-primary-key-field": (
        SQUAWK, "error",
        "A new serial primary key rewrites the table and builds its index under an ACCESS EXCLUSIVE lock.",
        "Add the column, backfill, build a unique index CONCURRENTLY, then ADD PRIMARY KEY USING INDEX.",
        "ALTER TABLE events ADD COLUMN id serial PRIMARY KEY;"),
    "require-concurrent-reindex": (
        SQUAWK, "error", "REINDEX without CONCURRENTLY blocks reads and writes of the table.",
        f"REINDEX ... CONCURRENTLY {_AUTOCOMMIT}.", "REINDEX INDEX ix_users_email;"),
    "ban-drop-database": (
        SQUAWK, "error", "Dropping a database from a migration loses every table in it.",
        "Drop databases by hand, after a backup, never from a revision.", "DROP DATABASE legacy;"),
    "ban-truncate-cascade": (
        SQUAWK, "error", "TRUNCATE ... CASCADE empties every table that references this one, too.",
        "Name exactly the tables to empty, without CASCADE.", "TRUNCATE releases CASCADE;"),
    "changing-column-type": (
        SQUAWK, "warn",
        "Changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock, unless the new type is "
        "binary-compatible (varchar(n) to text, or to a longer varchar).",
        "Add a column of the new type, backfill in batches, switch the app, drop the old column later.",
        "ALTER TABLE users ALTER COLUMN id TYPE bigint;"),
    "require-concurrent-index-deletion": (
        SQUAWK, "warn", "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table (briefly, once it has it).",
        f"op.drop_index(..., postgresql_concurrently=True) {_AUTOCOMMIT}.", "DROP INDEX ix_users_email;"),
    "require-concurrent-partition-detach": (
        SQUAWK, "warn", "DETACH PARTITION takes an ACCESS EXCLUSIVE lock on the parent.",
        f"DETACH PARTITION ... CONCURRENTLY {_AUTOCOMMIT}.", "ALTER TABLE events DETACH PARTITION events_2020;"),
    "ban-drop-column": (
        SQUAWK, "warn", "The app version still running reads the column: its queries fail the moment this commits.",
        "Deploy code that no longer reads the column first (expand/contract), then drop it in a later release.",
        "ALTER TABLE users DROP COLUMN nickname;"),
    "ban-drop-table": (
        SQUAWK, "warn", "Dropping a table deletes its rows and breaks every app version that still reads it.",
        "Stop reading the table in a release first; drop it in a later one, after a verified backup.",
        "DROP TABLE legacy_sessions;"),
    "renaming-column": (
        SQUAWK, "warn", "The running app version still uses the old name: its queries fail the moment this commits.",
        "Add the new column, write both, backfill, switch reads, then drop the old column (expand/contract).",
        "ALTER TABLE users RENAME COLUMN name TO full_name;"),
    "renaming-table": (
        SQUAWK, "warn", "The running app version still uses the old name: its queries fail the moment this commits.",
        "Create the new table (or a view with the new name), switch the app, then drop the old name.",
        "ALTER TABLE users RENAME TO accounts;"),
    "ban-drop-not-null": (
        SQUAWK, "warn", "Dropping NOT NULL lets NULLs in that the running app may not expect.",
        "Make sure every reader handles NULL first.", "ALTER TABLE users ALTER COLUMN email DROP NOT NULL;"),
    "require-enum-value-ordering": (
        SQUAWK, "warn", "ADD VALUE without BEFORE/AFTER appends the value, which changes how the enum sorts.",
        "Say where the value goes: ALTER TYPE ... ADD VALUE 'x' AFTER 'y'.", "ALTER TYPE status ADD VALUE 'paused';"),
    "ban-create-domain-with-constraint": (
        SQUAWK, "warn", "Domain constraints are checked against every column of that domain, under locks.",
        "Use table CHECK constraints (NOT VALID, then VALIDATE).", "CREATE DOMAIN positive AS int CHECK (VALUE > 0);"),
    "ban-alter-domain-with-add-constraint": (
        SQUAWK, "warn", "A new domain constraint scans every column of that domain.",
        "Use table CHECK constraints (NOT VALID, then VALIDATE).",
        "ALTER DOMAIN positive ADD CONSTRAINT c CHECK (VALUE > 0);"),
    "ban-drop-constraint": (
        SQUAWK, "info", "A dropped constraint no longer guards what the app may rely on.",
        "Make sure no reader relies on it.", "ALTER TABLE users DROP CONSTRAINT ck_age;"),
    "identifier-too-long": (
        SQUAWK, "warn", "PostgreSQL cuts names longer than 63 bytes: a later revision naming it in full fails.",
        "Name it in 63 bytes or fewer.", "CREATE INDEX ix_a_very_long_name_... ON t (c);"),
    "prefer-bigint-over-int": (
        SQUAWK, "info", "A 32-bit key runs out at 2.1 billion; changing it later rewrites the table.",
        "Use BigInteger for keys and counters.", "CREATE TABLE t (id int PRIMARY KEY);"),
    "prefer-bigint-over-smallint": (
        SQUAWK, "info", "A 16-bit column runs out at 32767; changing it later rewrites the table.",
        "Use BigInteger.", "CREATE TABLE t (n smallint);"),
    "prefer-identity": (
        SQUAWK, "info", "serial columns own a sequence with its own permissions and dependencies.",
        "Use sa.Identity() columns.", "CREATE TABLE t (id serial);"),
    "prefer-text-field": (
        SQUAWK, "info", "Changing a varchar's length later takes an ACCESS EXCLUSIVE lock.",
        "Use Text with a CHECK constraint on its length.", "CREATE TABLE t (name varchar(100));"),
    "prefer-timestamp-tz": (
        SQUAWK, "info", "timestamp without time zone drops the UTC offset.",
        "Use DateTime(timezone=True).", "CREATE TABLE t (at timestamp);"),
    "ban-char-field": (
        SQUAWK, "info", "char(n) pads with blanks; it is almost never what is meant.",
        "Use Text or String.", "CREATE TABLE t (code char(3));"),
    "syntax-error": (
        OURS, "error", "PostgreSQL's own parser refuses this statement: the revision fails when it reaches it.",
        "Fix the statement; run `alembic upgrade --sql` and read the line named.",
        "ALTER TABLE users ADD COLUMN;"),
    "update-limit": (
        OURS, "error", "PostgreSQL has no UPDATE ... LIMIT or DELETE ... LIMIT: the statement fails.",
        "Batch by key range: UPDATE ... WHERE id >= :lo AND id < :hi, one batch per transaction.",
        "UPDATE users SET name = lower(name) LIMIT 1000;"),
    "commit-in-do-block": (
        OURS, "error",
        "COMMIT inside a DO block fails when the block runs in a transaction, as Alembic runs revisions.",
        f"Commit batches from Python {_AUTOCOMMIT}, one UPDATE per batch.",
        "DO $$ BEGIN LOOP UPDATE ...; COMMIT; END LOOP; END $$;"),
    "unbatched-write": (
        OURS, "error",
        "An UPDATE or DELETE of a whole existing table holds row locks on every row and bloats it in one "
        "transaction; the app's writes to those rows wait until it ends.",
        f"Batch by key range {_AUTOCOMMIT}: UPDATE ... WHERE id >= :lo AND id < :hi, committing each batch.",
        "UPDATE users SET email = lower(email);"),
    "not-in-transaction": (
        OURS, "error",
        "PostgreSQL refuses this statement inside a transaction block, and Alembic runs revisions in one.",
        f"Run it {_AUTOCOMMIT}.", "BEGIN; DROP INDEX CONCURRENTLY ix_users_email; COMMIT;"),
    "table-rewrite": (
        OURS, "error", "VACUUM FULL and CLUSTER rewrite the whole table under an ACCESS EXCLUSIVE lock.",
        "Use pg_repack outside the migration, or leave it to autovacuum.", "VACUUM FULL deployments;"),
    "lock-table": (
        OURS, "warn", "LOCK TABLE holds its lock until the revision's transaction ends: traffic waits behind it.",
        "Take no explicit lock; let each statement take the lock it needs, under lock_timeout.",
        "LOCK TABLE users IN ACCESS EXCLUSIVE MODE;"),
    "timeout-override": (
        OURS, "error",
        "The apply path runs every revision under lock_timeout and statement_timeout; a revision that changes them "
        "can queue live traffic behind its locks for as long as it waits.",
        "Leave the timeouts to the apply path (apply_lock_timeout, apply_statement_timeout); a long statement "
        "belongs in an autocommit block with its own batches.", "SET lock_timeout = 0;"),
    "sql-not-rendered": (
        OURS, "error",
        "The revision's SQL cannot be rendered offline (it reads the database while it runs): nobody can read, lint "
        "or approve what it will do.",
        "Guard database reads with `if not op.get_context().as_sql:` and emit the statement each step runs offline, "
        "as release_manager's 4d3f6b8c0e54 does; or accept it after review.", "op.get_bind().execute(...).scalar()"),
    "lint-ignore-comment": (
        OURS, "warn", "A squawk ignore comment in a revision would switch the linter off by itself; here it has no "
        "effect, and what it hid is reported.",
        "Remove it; let a reviewed exception through with rm_lint_accept: [\"REVISION:RULE\"].",
        "-- squawk-ignore-file"),
    "downgrade-missing": (
        OURS, "warn", "The revision has no real downgrade (empty, pass or raises): a failed release cannot go "
        "back through it, only forward or by restoring a backup.",
        "Write the downgrade, or plan the way back (restore, forward fix) before approving.",
        "def downgrade(): pass"),
}

SEVERITIES = ("error", "warn", "info", "off")
# Statements PostgreSQL refuses as written (in a transaction, as Alembic runs them): they fail in any
# environment, so even a laptop blocks them (``blocking: [refused]``) before anything is backed up.
REFUSED = frozenset({"syntax-error", "update-limit", "commit-in-do-block", "not-in-transaction",
                     "ban-concurrent-index-creation-in-transaction"})


def rule(name: str, squawk_message: str = "", squawk_help: str = "") -> dict[str, str]:
    """A rule's source, default severity, why and fix (squawk's own words for a rule we do not describe)."""
    if name in RULES:
        source, severity, why, fix, _ = RULES[name]
        return {"source": source, "severity": severity, "why": why, "fix": fix, "refused": name in REFUSED}
    return {"source": SQUAWK, "severity": "warn", "why": squawk_message or name,
            "fix": squawk_help or "See squawk's documentation of this rule.", "refused": False}
