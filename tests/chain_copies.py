"""Copies of the release_manager chain with extra revisions on top, for fault and lock tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import ROOT

HEAD = "9c2b3f1a4e5d"

GOOD_REVISION = '''"""test: a good revision on top of head (users.nickname)"""
import sqlalchemy as sa
from alembic import op

revision = "f00d00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("nickname", sa.String(50)))


def downgrade():
    op.drop_column("users", "nickname")
'''

BROKEN_REVISION = '''"""test: a revision that fails half way (creates a table, then violates NOT NULL)"""
import sqlalchemy as sa
from alembic import op

revision = "f00d00000002"
down_revision = "f00d00000001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("audit_log", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("UPDATE users SET email = NULL")


def downgrade():
    op.drop_table("audit_log")
'''


def chain_copy(tmp_path: Path, *revisions: str) -> Path:
    """Copy alembic/, alembic.ini and release_manager/ to tmp_path, add revisions; return the ini."""
    for name in ("alembic", "release_manager"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "alembic.ini", tmp_path / "alembic.ini")
    for index, text in enumerate(revisions):
        (tmp_path / "alembic" / "versions" / f"f00d0000000{index + 1}_test.py").write_text(text.format(down=HEAD))
    return tmp_path / "alembic.ini"


# A revision whose upgrade works and whose downgrade fails (so a rollback must fall back to a restore).
UNDOWNGRADABLE_REVISION = GOOD_REVISION.replace(
    'op.drop_column("users", "nickname")', 'op.execute("SELECT no_such_function()")')

# The runbook's mistake: CREATE INDEX CONCURRENTLY inside Alembic's transaction (the lint's error).
CONCURRENT_IN_TRANSACTION_REVISION = '''"""test: CREATE INDEX CONCURRENTLY inside the migration's transaction"""
from alembic import op

revision = "f00d00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE INDEX CONCURRENTLY users_name_idx ON users (name)")


def downgrade():
    op.execute("DROP INDEX users_name_idx")
'''

# A revision that sleeps: a statement_timeout shorter than the sleep cancels it.
SLOW_REVISION = GOOD_REVISION.replace(
    'op.add_column("users", sa.Column("nickname", sa.String(50)))', 'op.execute("SELECT pg_sleep(2)")').replace(
    'op.drop_column("users", "nickname")', "pass")


def branch_revision(rev: str, down: str, column: str) -> str:
    """A revision adding users.<column>; several on one parent make several heads."""
    return f'''"""test: branch {rev} adds users.{column}"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("{column}", sa.Integer))


def downgrade():
    op.drop_column("users", "{column}")
'''


def chain_with(tmp_path: Path, files: dict[str, str]) -> Path:
    """Like chain_copy, with revision files given by name (their text used as is)."""
    ini = chain_copy(tmp_path)
    for name, text in files.items():
        (tmp_path / "alembic" / "versions" / name).write_text(text)
    return ini


# A revision that applies cleanly but leaves the schema unlike the models: it drops an index they declare.
DRIFTING_REVISION = '''"""test: drop an index the models still declare"""
from alembic import op

revision = "f00d00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index("ix_releases_created_at", table_name="releases")


def downgrade():
    op.create_index("ix_releases_created_at", "releases", ["created_at"])
'''


# A revision whose upgrade works and whose downgrade names a column that does not exist.
BROKEN_DOWNGRADE_REVISION = '''"""test: a revision whose downgrade fails"""
import sqlalchemy as sa
from alembic import op

revision = "dead00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("releases", sa.Column("channel", sa.String(20)))


def downgrade():
    op.drop_column("releases", "no_such_column")
'''


# A contract step: drop users.email while the running app still reads it (on head).
DROPS_EMAIL = GOOD_REVISION.replace(
    '"""test: a good revision on top of head (users.nickname)"""',
    '"""test: drop users.email while the running app still reads it"""',
).replace('op.add_column("users", sa.Column("nickname", sa.String(50)))', 'op.drop_column("users", "email")').replace(
    'op.drop_column("users", "nickname")', 'op.add_column("users", sa.Column("email", sa.String(255), nullable=True))')


def second(revision_text: str) -> str:
    """A revision written for the first place on head, moved to the second (on top of f00d00000001)."""
    return revision_text.replace('revision = "f00d00000001"', 'revision = "f00d00000002"').replace(
        'down_revision = "{down}"', 'down_revision = "f00d00000001"')
