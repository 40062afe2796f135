"""Rollback plans and their steps, and the journal's read of a resource after a write.

Revision ID: 0003
Revises: 0002
Create Date: 2024-07-01
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _texts(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.Text(), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "rollback_plans",
        sa.Column("id", sa.Text(), primary_key=True),
        *_texts("created_at", "by", "selector"),
        sa.Column("force", sa.Boolean(), nullable=False),
        *_texts("status", "irreversible", "skipped", "updated_at"),
    )
    op.create_index("ix_rollback_plans_status", "rollback_plans", ["status"])
    op.create_table(
        "rollback_steps",
        sa.Column("plan_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        *_texts("entry_id", "upstream", "method", "path"),
        *_texts("body", nullable=True),
        *_texts("content_type", "target"),
        *_texts("expected", nullable=True),
        *_texts("volatile", "status"),
        *_texts("detail", "journal_id", nullable=True),
        *_texts("updated_at"),
        sa.PrimaryKeyConstraint("plan_id", "seq"),
    )
    op.add_column("journal", sa.Column("after", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journal") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("after")
    op.drop_table("rollback_steps")
    op.drop_index("ix_rollback_plans_status", table_name="rollback_plans")
    op.drop_table("rollback_plans")
