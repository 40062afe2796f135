"""A write whose agent left before its answer can be rejoined by the resend.

An agent whose own timeout is shorter than the upstream's answer closes its
connection and resends the write, which the gateway sent a second time. The
write is now marked as left (``gateway.core.resend``); its resend waits for the
first one's answer instead of being sent.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | Sequence[str] | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "left_writes",
        sa.Column("entry_id", sa.Text(), primary_key=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("left_at", sa.Text(), nullable=False),
        sa.Column("rejoined_at", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("sealed_response", sa.Text(), nullable=True),
    )
    op.create_index("ix_left_writes_key", "left_writes", ["key", "left_at"])


def downgrade() -> None:
    op.drop_index("ix_left_writes_key", table_name="left_writes")
    op.drop_table("left_writes")
