"""A held call whose agent left before it was answered can be rejoined by its resend.

An agent whose own timeout is shorter than the hold's ``wait`` closes its
connection and resends the call. Each resend used to queue a new held call, and
an operator approving both sent the write twice. ``left_key`` is set when the
waiting agent leaves (``gateway.core.approvals.resend_key``), ``left_at`` when;
a resend with the same key rejoins the call and clears it.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | Sequence[str] | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("approvals", sa.Column("left_key", sa.Text(), nullable=True))
    op.add_column("approvals", sa.Column("left_at", sa.Text(), nullable=True))
    op.create_index("ix_approvals_left_key", "approvals", ["left_key"])


def downgrade() -> None:
    op.drop_index("ix_approvals_left_key", table_name="approvals")
    with op.batch_alter_table("approvals") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("left_at")
        batch.drop_column("left_key")
