"""The audit trail's batches ride on the intents' call too, on PostgreSQL.

``gateway_journal_intents_audit(batch, outcomes, at[], actor[], action[],
detail[], head[])`` does what ``gateway_journal_intents_outcomes`` (0020)
does, then appends the audit records given as ``gateway_audit_append``
(0019) would, in the same transaction: one round trip and one commit where
a batch of decisions took a call and a commit of its own (half a
transaction per PATCH at one connection).

The chain's lock (``WRITE_LOCK``) is only tried, after the intents are in:
a release takes it before the arbiter's, so waiting for it while holding
the arbiter's lock in shared mode could deadlock, and the intents (the
reply path) must not wait for a chain writer anyway. When the lock is busy
the records are not appended and the caller appends them alone, as before.
Taken, it is held until this transaction commits, as an engage, which only
tries it too (0018), already finds it after every intents' call under way.

It returns (outcome?, id) per journal row updated or inserted as 0020 does,
with NULL seq, then (NULL, NULL, seq, prev_hash, hash) per audit record, in
order.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITE_LOCK = 0x67775F7772697465  # gateway.store.audit.WRITE_LOCK ("gw_write")
FUNCTION = f"""
CREATE FUNCTION gateway_journal_intents_audit(batch jsonb, outcomes jsonb, p_at text[],
                                              p_actor text[], p_action text[],
                                              p_detail text[], p_head text[])
RETURNS TABLE (outcome boolean, entry text, seq integer, prev_hash text, hash text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY SELECT j.outcome, j.entry, NULL::integer, NULL::text, NULL::text
        FROM gateway_journal_intents_outcomes(batch, outcomes) AS j;
    IF COALESCE(array_length(p_at, 1), 0) = 0 THEN
        RETURN;
    END IF;
    IF pg_try_advisory_xact_lock({WRITE_LOCK}) THEN  -- held: gateway_audit_append's is granted
        RETURN QUERY SELECT NULL::boolean, NULL::text, a.out_seq, a.out_prev_hash, a.out_hash
            FROM gateway_audit_append(p_at, p_actor, p_action, p_detail, p_head) AS a;
    END IF;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_journal_intents_audit(jsonb, jsonb, text[], text[], "
                   "text[], text[], text[])")
