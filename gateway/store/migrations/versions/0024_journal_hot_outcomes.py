"""An outcome rewrites its journal row in place on PostgreSQL (a HOT update).

PostgreSQL writes an UPDATE as a new row version. When no indexed column
changes and the row's page has room, the new version goes on the same page
and no index is touched (a heap-only tuple, "HOT"); otherwise every index of
the table gets an entry for it. The journal has six indexes, and an outcome
changes ``state``, which the partial index ``ix_journal_intents`` names in its
predicate: so every outcome wrote six index entries, and left six dead ones
for a vacuum (``bench``: 0 of 17,000 outcomes were HOT; 5.2 KB of WAL per
PATCH).

That index serves nothing on PostgreSQL since 0023 (the open intents are read
from ``journal_open``), so it goes, there only: SQLite reads it, and updates
its indexes in place anyway. And the journal's pages are filled to 40% by
intents, leaving the rest for their outcomes' versions (``fillfactor``; an
outcome holds the answer, about as much as the request): measured at 32
connections, 100% of outcomes HOT (70% at 50%), 3.3 KB of WAL per PATCH, and
the database's CPU per PATCH 9% lower. Once an outcome is written, page
pruning frees its intent's version without a vacuum. Pages written before
this migration keep their old fill.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | Sequence[str] | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 40  # percent of a journal page intents fill (gateway.store.tables)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_journal_intents")
    op.execute(f"ALTER TABLE journal SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE journal RESET (fillfactor)")
    op.execute("CREATE INDEX ix_journal_intents ON journal (at) WHERE state = 'intent'")
