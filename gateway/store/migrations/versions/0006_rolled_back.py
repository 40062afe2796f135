"""The journal records which rollback plan compensated an entry (state ``rolled_back``).

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("journal", sa.Column("rolled_back_plan", sa.Text(), nullable=True))
    op.add_column("journal", sa.Column("rolled_back_at", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journal") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("rolled_back_at")
        batch.drop_column("rolled_back_plan")
