"""Leases: one executor per rollback plan and one recoverer per dead process, across
every process sharing the store; and tripwire windows kept in the store.

``leases`` holds one row per named lease (``plan:<id>``, ``process:<name>``):
its owner (a process name) and until when it holds. A lease is taken by one
INSERT ... ON CONFLICT DO UPDATE ... WHERE the old one lapsed or is the
taker's own (atomic on SQLite and PostgreSQL alike), renewed the same way
while its work runs, deleted when the work is done.

``tripwire_counts`` holds the events of a tripwire window per (tripwire window name,
bucket start): counted with one upsert per write, summed over the window.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Text(), nullable=False),
    )
    op.create_table(
        "tripwire_counts",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("bucket", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tripwire_counts")
    op.drop_table("leases")
