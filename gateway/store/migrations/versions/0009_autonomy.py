"""Earned autonomy: the journal's mode and would_decide, delayed calls' due time, and an
index on the audit chain's time for the autonomy report.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("journal", sa.Column("mode", sa.Text(), nullable=True))
    op.add_column("journal", sa.Column("would_decide", sa.Text(), nullable=True))
    op.add_column("approvals", sa.Column("due_at", sa.Text(), nullable=True))
    op.create_index("ix_approvals_status_due_at", "approvals", ["status", "due_at"])
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_index("ix_approvals_status_due_at", table_name="approvals")
    with op.batch_alter_table("approvals") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("due_at")
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("would_decide")
        batch.drop_column("mode")
