"""users.email_verified, false by default

Revision ID: 8f1a2b3c4d5e
Revises: 5e4a7c9d1f65
Create Date: 2026-11-01 09:50:00

On PostgreSQL 11+ adding a column with a constant default is a catalog-only change (no rewrite),
so NOT NULL with a server default is safe on a large table.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "8f1a2b3c4d5e"
down_revision = "5e4a7c9d1f65"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.text("false")))


def downgrade() -> None:
    op.drop_column("users", "email_verified")
