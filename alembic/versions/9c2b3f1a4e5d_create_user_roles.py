"""create user_roles

Revision ID: 9c2b3f1a4e5d
Revises: 8f1a2b3c4d5e
Create Date: 2026-11-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "9c2b3f1a4e5d"
down_revision = "8f1a2b3c4d5e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(50), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="user_roles_user_id_fkey"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_user_roles_user_id", "user_roles", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_user_roles_user_id", table_name="user_roles")
    op.drop_table("user_roles")
