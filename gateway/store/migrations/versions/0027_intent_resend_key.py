"""An intent carries the key its agent's resends have.

A process killed while a write is on its way leaves an intent that may have
landed; the agent's SDK resends the write, and another process gets it. To stop
that resend, the processes that take over the dead one's writes mark them as
left (``left_writes``, 0026) under the key their resends have
(``gateway.core.resend.key_of``), which only the journal can tell them now:
``journal.resend_key``. On PostgreSQL the hot path's row type ``journal_intent``
(0022) gains the attribute, and ``gateway_journal_write`` inserts it.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | Sequence[str] | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARBITER_LOCK = 0x67775F6172626974  # gateway.store.killswitch.ARBITER_LOCK ("gw_arbit")
WRITE_LOCK = 0x67775F7772697465  # gateway.store.audit.WRITE_LOCK ("gw_write")
BEFORE = (  # gateway.store.killswitch.INTENT_COLUMNS, as they were at 0022
    "id", "at", "request_id", "agent", "run", "model", "prompt_version", "tool_version",
    "upstream", "method", "path", "query", "rule", "decision", "policy_revision",
    "request_headers", "request_body", "request_body_sha256", "request_body_size",
    "request_content_type", "prior", "prior_status", "capture_path", "undo", "reversible",
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "error", "timings", "completed_at", "approval", "after",
    "mode", "would_decide", "sealed", "irreversible_reason", "process",
)
INTENT_COLUMNS = (*BEFORE, "resend_key")  # as they are at 0027
OUTCOME_COLUMNS = (  # gateway.store.codec.OUTCOME_COLUMNS, as they were at 0022, then the id
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "undo", "reversible", "error", "timings", "completed_at", "after",
    "sealed_outcome", "id",
)


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _function(intent_columns: Sequence[str]) -> str:
    """0022's function, inserting ``intent_columns``."""
    return f"""
CREATE OR REPLACE FUNCTION gateway_journal_write(intents journal_intent[], outcomes journal_outcome[],
                                      p_at text[], p_actor text[], p_action text[],
                                      p_detail text[], p_head text[])
RETURNS TABLE (outcome boolean, entry text, seq integer, prev_hash text, hash text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v journal_outcome;
BEGIN
    FOREACH v IN ARRAY COALESCE(outcomes, '{{}}') LOOP
        UPDATE journal AS j SET {", ".join(f'"{c}" = v."{c}"' for c in OUTCOME_COLUMNS[:-1])}
            WHERE j.id = v.id;
        IF FOUND THEN
            outcome := true;
            entry := v.id;
            RETURN NEXT;
        END IF;
    END LOOP;
    outcome := NULL;
    entry := NULL;
    PERFORM pg_advisory_xact_lock_shared({ARBITER_LOCK});
    RETURN QUERY
    INSERT INTO journal ({_names(intent_columns)})
    SELECT n.* FROM unnest(intents) AS n
    WHERE NOT EXISTS (
        SELECT 1 FROM freezes f WHERE f.released_at IS NULL AND (
            f.scope = 'global'
            OR (f.scope = 'upstream' AND f.target = n.upstream)
            OR (f.scope = 'agent' AND f.target = n.agent)))
    RETURNING false, journal.id, NULL::integer, NULL::text, NULL::text;
    IF COALESCE(array_length(p_at, 1), 0) > 0
            AND pg_try_advisory_xact_lock({WRITE_LOCK}) THEN  -- held: 0019's is granted
        RETURN QUERY SELECT NULL::boolean, NULL::text, a.out_seq, a.out_prev_hash, a.out_hash
            FROM gateway_audit_append(p_at, p_actor, p_action, p_detail, p_head) AS a;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.add_column("journal", sa.Column("resend_key", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE journal_intent ADD ATTRIBUTE resend_key text")
        op.execute(_function(INTENT_COLUMNS))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(BEFORE))
        op.execute("ALTER TYPE journal_intent DROP ATTRIBUTE resend_key")
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("resend_key")
