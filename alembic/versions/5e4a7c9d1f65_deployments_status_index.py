"""index deployments.status without blocking writes (CREATE INDEX CONCURRENTLY)

Revision ID: 5e4a7c9d1f65
Revises: 4d3f6b8c0e54
Create Date: 2026-11-01 09:40:00

``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction block, and Alembic runs each revision
in one; the runbook's ``op.execute("CREATE INDEX CONCURRENTLY ...")`` fails for that reason.
``autocommit_block()`` commits the revision's transaction, runs the statement in autocommit and
opens a new transaction. If the build fails it leaves an INVALID index behind, so the upgrade
drops any leftover first and the statement is safe to run again.
"""

from __future__ import annotations

from alembic import op

revision = "5e4a7c9d1f65"
down_revision = "4d3f6b8c0e54"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_deployments_status")
        op.execute("CREATE INDEX CONCURRENTLY ix_deployments_status ON deployments (status)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_deployments_status")
