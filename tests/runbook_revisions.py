"""The runbook's dangerous migration examples as Alembic revisions, and their safe versions.

Each text is a revision file on top of the release_manager chain's head (``{down}``); the lint must block
each dangerous one (naming the rule) and let each safe one through without a blocking finding.
"""

from __future__ import annotations

_HEADER = '''"""test: {title}"""
import sqlalchemy as sa
from alembic import op

revision = "f00d00000001"
down_revision = "{{down}}"
branch_labels = None
depends_on = None


def upgrade():
'''

_DOWN_STATUS = '''

def downgrade():
    op.drop_column("users", "status")
'''


def _revision(title: str, body: str, downgrade: str = _DOWN_STATUS) -> str:
    return _HEADER.format(title=title) + body + downgrade


# rule that must block -> revision (the runbook's own examples, as its code blocks write them)
DANGEROUS: dict[str, tuple[str, str]] = {
    "index-without-concurrently": ("require-concurrent-index-creation", _revision(
        "CREATE INDEX without CONCURRENTLY on an existing table",
        '    op.create_index("ix_deployments_created_at2", "deployments", ["created_at"])\n',
        '\n\ndef downgrade():\n    op.drop_index("ix_deployments_created_at2")\n')),
    "concurrently-in-transaction": ("ban-concurrent-index-creation-in-transaction", _revision(
        "CREATE INDEX CONCURRENTLY inside the revision's transaction",
        '    op.execute("""CREATE INDEX CONCURRENTLY ix_deployments_status2 ON deployments(status)""")\n',
        '\n\ndef downgrade():\n    op.drop_index("ix_deployments_status2")\n')),
    "not-null-without-default": ("adding-required-field", _revision(
        "a NOT NULL column without a default",
        '    op.add_column("users", sa.Column("status", sa.String(20), nullable=False))\n')),
    "update-limit-commit-in-do-block": ("update-limit", _revision(
        "UPDATE ... LIMIT and COMMIT in a DO block",
        '''    op.add_column("users", sa.Column("status", sa.String(100), nullable=True))
    op.execute("""
        DO $$
        BEGIN
            FOR counter IN 1..10 LOOP
                UPDATE users
                SET status = 'default_value'
                WHERE status IS NULL
                LIMIT 100000;
                COMMIT;
            END LOOP;
        END $$;
    """)
    op.alter_column("users", "status", nullable=False)
''')),
    "unbatched-update": ("unbatched-write", _revision(
        "an unbatched UPDATE of a whole existing table",
        '''    op.add_column("users", sa.Column("status", sa.String(20), nullable=True))
    op.execute("UPDATE users SET status = 'active' WHERE status IS NULL")
''')),
}

# PostgreSQL itself refuses these as written (on a table with rows): applying them must fail.
REFUSED_BY_POSTGRESQL = {"concurrently-in-transaction", "not-null-without-default", "update-limit-commit-in-do-block"}

_BATCHES = '''
    with op.get_context().autocommit_block():
        for low in range(0, 3000, 1000):  # one transaction per batch of ids
            op.execute("UPDATE users SET status = 'active' WHERE id > %d AND id <= %d AND status IS NULL"
                       % (low, low + 1000))
'''

SAFE: dict[str, str] = {
    "index-without-concurrently": _revision(
        "the index built CONCURRENTLY outside the transaction",
        '''    with op.get_context().autocommit_block():
        op.create_index("ix_deployments_created_at2", "deployments", ["created_at"], postgresql_concurrently=True,
                        if_not_exists=True)
''', '\n\ndef downgrade():\n    op.drop_index("ix_deployments_created_at2")\n'),
    "concurrently-in-transaction": _revision(
        "CREATE INDEX CONCURRENTLY in an autocommit block",
        '''    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deployments_status2 ON deployments (status)")
''', '\n\ndef downgrade():\n    op.drop_index("ix_deployments_status2")\n'),
    "not-null-without-default": _revision(
        "a NOT NULL column with a constant server default",
        '    op.add_column("users", sa.Column("status", sa.String(20), nullable=False, server_default="pending"))\n'),
    "update-limit-commit-in-do-block": _revision(
        "add nullable, backfill in batches, prove NOT NULL with a validated CHECK, then SET NOT NULL",
        '    op.add_column("users", sa.Column("status", sa.String(100), nullable=True))\n' + _BATCHES + '''
    op.execute("ALTER TABLE users ADD CONSTRAINT ck_users_status_nn CHECK (status IS NOT NULL) NOT VALID")
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_status_nn")
    op.alter_column("users", "status", nullable=False)
    op.drop_constraint("ck_users_status_nn", "users", type_="check")
'''),
    "unbatched-update": _revision(
        "the UPDATE in batches of ids, each committed",
        '    op.add_column("users", sa.Column("status", sa.String(20), nullable=True))\n' + _BATCHES),
}
