"""Journal outcomes ride on the next intents' call on PostgreSQL.

``gateway_journal_intents_outcomes(batch, outcomes)`` does what
``gateway_journal_intents(batch)`` (0005) does, after recording the outcomes
given (JSON objects keyed by column name, read as the ``journal`` row type:
the outcome columns and the id): one round trip where a write's intent and an
earlier write's outcome took two. Each outcome is its own UPDATE by primary
key, so its plan is the key's index however small the journal was when the
session first ran it (a join of the batch against the journal could be
cached as a scan of the whole journal). It returns (outcome?, id) per row
updated or inserted. The outcomes are updated before the arbiter's lock is
taken: nothing an engage does waits on a journal row.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARBITER_LOCK = 0x67775F6172626974  # gateway.store.killswitch.ARBITER_LOCK ("gw_arbit")
OUTCOME_COLUMNS = (  # gateway.store.codec.OUTCOME_COLUMNS, as they were at 0020
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "undo", "reversible", "error", "timings", "completed_at", "after",
    "sealed_outcome",
)
_SET = ", ".join(f'"{c}" = v."{c}"' for c in OUTCOME_COLUMNS)
FUNCTION = f"""
CREATE FUNCTION gateway_journal_intents_outcomes(batch jsonb, outcomes jsonb)
RETURNS TABLE (outcome boolean, entry text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v journal;
BEGIN
    FOR v IN SELECT * FROM jsonb_populate_recordset(NULL::journal, outcomes) LOOP
        UPDATE journal AS j SET {_SET} WHERE j.id = v.id;
        IF FOUND THEN
            outcome := true;
            entry := v.id;
            RETURN NEXT;
        END IF;
    END LOOP;
    -- as gateway_journal_intents (0005): the lock in a statement of its own, then
    -- the INSERT, which sees every freeze committed before the lock was granted
    PERFORM pg_advisory_xact_lock_shared({ARBITER_LOCK});
    RETURN QUERY
    INSERT INTO journal SELECT n.* FROM jsonb_populate_recordset(NULL::journal, batch) AS n
    WHERE NOT EXISTS (
        SELECT 1 FROM freezes f WHERE f.released_at IS NULL AND (
            f.scope = 'global'
            OR (f.scope = 'upstream' AND f.target = n.upstream)
            OR (f.scope = 'agent' AND f.target = n.agent)))
    RETURNING false, journal.id;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_journal_intents_outcomes(jsonb, jsonb)")
