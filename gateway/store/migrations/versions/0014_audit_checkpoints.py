"""Signed checkpoints of the audit log's Merkle tree (issue 19).

``audit_checkpoints`` holds one row per signed tree size: the root (base64),
the C2SP signed note, when it was signed, and what each anchor (file,
witness, timestamp authority) answered, as a JSON object. The audit chain
itself is unchanged: the tree is computed from its ``hash`` column.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("at", sa.Text(), nullable=False),
        sa.Column("anchors", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
