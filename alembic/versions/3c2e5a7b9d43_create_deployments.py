"""create deployments, linked to releases by a named foreign key

Revision ID: 3c2e5a7b9d43
Revises: 2b1d4f6a8c32
Create Date: 2026-11-01 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "3c2e5a7b9d43"
down_revision = "2b1d4f6a8c32"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Named, so a later revision (and its downgrade) can drop it by name on every server.
    op.create_foreign_key("fk_deployments_release_id", "deployments", "releases", ["release_id"], ["id"])
    op.create_index("ix_deployments_created_at", "deployments", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_deployments_created_at", table_name="deployments")
    op.drop_constraint("fk_deployments_release_id", "deployments", type_="foreignkey")
    op.drop_table("deployments")
