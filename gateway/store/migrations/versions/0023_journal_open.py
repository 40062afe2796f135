"""The journal's open intents kept in a table of their own, on PostgreSQL.

The kill switch's engage, its wait for the writes of processes that did not
answer, and every process's recovery round read the intents still without an
outcome (``state = 'intent'``). On the journal they were served by the partial
index ``ix_journal_intents``, which on PostgreSQL cannot stay small: an outcome
moves its row out of the index's predicate, and the old entry stays, pointing
at a dead row version, until a vacuum. Under a steady stream of writes every
write of the last ``horizon`` seconds (40 s by default) left such an entry, and
the read visited each one's heap page: 120-200 ms at 1,400 writes a second,
measured on a 2-core machine, on the engage's path (``bench/engage_sustained.py``).

``journal_open`` holds one narrow row per open intent: triggers on ``journal``
insert it with the intent and delete it when the row's state leaves
``intent`` (or the row goes), so it holds what the partial index's live
entries hold and is right whatever path changes the journal. It is read by a
sequential scan of a few pages; its own dead rows are vacuumed often
(``autovacuum_vacuum_scale_factor = 0``: after every 1,000 of them).

SQLite has no dead index entries (an UPDATE rewrites the index in place): the
table is created there too, so both stores have one schema, but nothing fills
it, and the SQLite store keeps reading the partial index.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("id", "at", "agent", "upstream", "method", "path", "process")
TRIGGER = f"""
CREATE FUNCTION gateway_journal_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE journal_open;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = 'intent' THEN
        DELETE FROM journal_open WHERE id = OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = 'intent' THEN
        INSERT INTO journal_open ({", ".join(COLUMNS)})
        VALUES ({", ".join("NEW." + c for c in COLUMNS)});
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "journal_open",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("at", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("upstream", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("process", sa.Text(), nullable=True),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE journal_open SET (autovacuum_vacuum_scale_factor = 0, "
               "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0)")
    op.execute(TRIGGER)
    # an outcome rewrites every outcome column, state among them: the trigger fires only
    # when the intent's state is set, and does something only when it enters or leaves
    op.execute("CREATE TRIGGER journal_open_rows AFTER INSERT OR DELETE OR UPDATE OF state "
               "ON journal FOR EACH ROW EXECUTE FUNCTION gateway_journal_open()")
    op.execute("CREATE TRIGGER journal_open_truncate AFTER TRUNCATE ON journal "
               "FOR EACH STATEMENT EXECUTE FUNCTION gateway_journal_open()")
    op.execute(f"INSERT INTO journal_open ({', '.join(COLUMNS)}) "
               f"SELECT {', '.join(COLUMNS)} FROM journal WHERE state = 'intent'")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER journal_open_truncate ON journal")
        op.execute("DROP TRIGGER journal_open_rows ON journal")
        op.execute("DROP FUNCTION gateway_journal_open()")
    op.drop_table("journal_open")
