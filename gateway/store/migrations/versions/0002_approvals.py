"""Held calls awaiting approval, and the journal's record of a call's approval.

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-15
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _texts(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.Text(), nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.Text(), primary_key=True),
        *_texts("at", "agent", "upstream", "method", "raw_path", "query", "headers"),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        *_texts("run", "model", "prompt_version", "tool_version", "rule", nullable=True),
        *_texts("policy_revision", "digest"),
        sa.Column("required", sa.Integer(), nullable=False),
        *_texts("roles", "operators", "expires_at", nullable=True),
        *_texts("status", "votes"),
        *_texts("decided_by", "decided_at", "reason", "lease_until", "response", "journal_id",
                "error", nullable=True),
        *_texts("extra"),
    )
    op.create_index("ix_approvals_status_at", "approvals", ["status", "at"])
    op.create_index("ix_approvals_agent_at", "approvals", ["agent", "at"])
    op.create_index("ix_approvals_upstream_at", "approvals", ["upstream", "at"])
    op.add_column("journal", sa.Column("approval", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journal") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("approval")
    op.drop_table("approvals")
