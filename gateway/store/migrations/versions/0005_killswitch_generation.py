"""One kill switch for every process on the store.

``killswitch`` holds one row, the generation: every engage and release adds
one in the transaction that changes the freezes, so a process can tell with
one cheap read whether its view of the freezes is current. ``journal.process``
names the gateway process that journaled an intent, and ``ix_journal_intents``
finds the intents still waiting for an outcome (what an engage must account
for when a process does not answer).

On PostgreSQL, ``gateway_journal_intents(batch)`` journals a batch of intents
in one round trip, refusing those an active freeze covers (see
``gateway.store.killswitch``). Its rows are JSON objects keyed by column name
and read as the ``journal`` row type, so columns added later need no change here.

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
ARBITER_LOCK = 0x67775F6172626974  # gateway.store.killswitch.ARBITER_LOCK ("gw_arbit")
JOURNAL_INTENTS = f"""
CREATE FUNCTION gateway_journal_intents(batch jsonb) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- An engage holds this lock exclusively while it inserts its freeze. It is
    -- taken in a statement of its own: the INSERT below, a new statement of a
    -- VOLATILE function, sees every freeze committed before the lock was granted.
    PERFORM pg_advisory_xact_lock_shared({ARBITER_LOCK});
    RETURN QUERY
    INSERT INTO journal SELECT v.* FROM jsonb_populate_recordset(NULL::journal, batch) AS v
    WHERE NOT EXISTS (
        SELECT 1 FROM freezes f WHERE f.released_at IS NULL AND (
            f.scope = 'global'
            OR (f.scope = 'upstream' AND f.target = v.upstream)
            OR (f.scope = 'agent' AND f.target = v.agent)))
    RETURNING journal.id;
END
$$
"""


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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(JOURNAL_INTENTS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_journal_intents(jsonb)")
    op.drop_index("ix_journal_intents", "journal")
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("process")
    op.drop_table("killswitch")
