"""deployments.status: add nullable, backfill in keyset batches, then NOT NULL

Revision ID: 4d3f6b8c0e54
Revises: 3c2e5a7b9d43
Create Date: 2026-11-01 09:30:00

The runbook adds the column NOT NULL with a default and updates every row in one statement, and
its large-table variant uses ``UPDATE ... LIMIT`` and ``COMMIT`` inside a ``DO`` block: PostgreSQL
has no ``UPDATE ... LIMIT``, and a ``DO`` block run through Alembic's transaction cannot commit.
Here:
1. the column is added nullable (a catalog-only change, a brief lock);
2. rows are backfilled in batches walked by primary key, each committed on its own in an
   ``autocommit_block()`` so no batch holds row locks for long and a live app keeps writing;
3. NOT NULL is proven by a ``CHECK ... NOT VALID`` constraint, committed at once, then validated in a
   transaction of its own (validating in the transaction that added it would scan the table while
   holding the ADD's ACCESS EXCLUSIVE lock); after that ``SET NOT NULL`` needs no table scan under its
   exclusive lock (PostgreSQL 12+), and the helper constraint is dropped again.
Every step is safe to run again, so a run interrupted during the backfill can simply be retried.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "4d3f6b8c0e54"
down_revision = "3c2e5a7b9d43"
branch_labels = None
depends_on = None

BATCH_SIZE = 5000
STATUS_EXPR = "CASE WHEN completed_at IS NOT NULL THEN 'completed' ELSE 'pending' END"


def _backfill() -> None:
    if op.get_context().as_sql:
        # Offline preview: the statement each batch runs (its first batch; the bounds move on by BATCH_SIZE ids).
        op.execute(
            f"UPDATE deployments SET status = {STATUS_EXPR} WHERE id > 0 AND id <= {BATCH_SIZE} AND status IS NULL"
        )
        return
    bind = op.get_bind()
    last_id = 0
    while True:
        upper = bind.execute(
            sa.text("SELECT max(id) FROM (SELECT id FROM deployments WHERE id > :last ORDER BY id LIMIT :size) b"),
            {"last": last_id, "size": BATCH_SIZE},
        ).scalar()
        if upper is None:
            return
        bind.execute(
            sa.text(
                f"UPDATE deployments SET status = {STATUS_EXPR} "
                "WHERE id > :last AND id <= :upper AND status IS NULL"
            ),
            {"last": last_id, "upper": upper},
        )
        last_id = upper


def upgrade() -> None:
    op.execute("ALTER TABLE deployments ADD COLUMN IF NOT EXISTS status VARCHAR(20)")
    with op.get_context().autocommit_block():
        _backfill()
    op.execute("ALTER TABLE deployments DROP CONSTRAINT IF EXISTS ck_deployments_status_not_null")
    op.execute(
        "ALTER TABLE deployments ADD CONSTRAINT ck_deployments_status_not_null CHECK (status IS NOT NULL) NOT VALID"
    )
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE deployments VALIDATE CONSTRAINT ck_deployments_status_not_null")
    op.alter_column("deployments", "status", existing_type=sa.String(20), nullable=False)
    op.drop_constraint("ck_deployments_status_not_null", "deployments", type_="check")


def downgrade() -> None:
    op.drop_column("deployments", "status")
