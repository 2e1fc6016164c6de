"""create releases, with JSONB metadata and indexes on status and created_at

Revision ID: 2b1d4f6a8c32
Revises: 1a0c3e5f7b21
Create Date: 2026-11-01 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "2b1d4f6a8c32"
down_revision = "1a0c3e5f7b21"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("metadata", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # A new, empty table: plain CREATE INDEX is instant here and may run in the transaction.
    op.create_index("ix_releases_status", "releases", ["status"])
    op.create_index("ix_releases_created_at", "releases", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_releases_created_at", table_name="releases")
    op.drop_index("ix_releases_status", table_name="releases")
    op.drop_table("releases")
