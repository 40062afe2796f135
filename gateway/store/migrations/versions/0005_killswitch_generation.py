"""One kill switch for every process on the store.

``killswitch`` holds one row, the generation: every engage and release adds
one in the transaction that changes the freezes, so a process can tell with
one cheap read whether its view of the freezes is current. ``journal.process``
names the gateway process that journaled an intent, and ``ix_journal_intents``
finds the intents still waiting for an outcome (what an engage must account
for when a process does not answer).

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INTENTS = sa.text("state = 'intent'")


def upgrade() -> None:
    killswitch = op.create_table(
        "killswitch",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(killswitch, [{"id": 1, "generation": 0}])
    op.add_column("journal", sa.Column("process", sa.Text(), nullable=True))
    op.create_index("ix_journal_intents", "journal", ["at"], sqlite_where=INTENTS,
                    postgresql_where=INTENTS)


def downgrade() -> None:
    op.drop_index("ix_journal_intents", "journal")
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("process")
    op.drop_table("killswitch")
