"""The hot path's journal call on PostgreSQL takes its batches as arrays of rows, not JSON.

``gateway_journal_write(intents, outcomes, at[], actor[], action[], detail[],
head[])`` does what ``gateway_journal_intents_audit`` (0021) does, with the
intents an array of ``journal_intent`` rows (``INTENT_COLUMNS``) and the
outcomes an array of ``journal_outcome`` rows (``OUTCOME_COLUMNS``, then the
id), which asyncpg sends in the binary format; the audit records as
``gateway_audit_append`` (0019) takes them. Under load PostgreSQL's backend
spent about a sixth of its time turning the JSON batches of 0005/0020 into
rows: lexing strings that are JSON inside JSON, sorting each object's keys
into jsonb, then looking each of the journal's 44 columns up in each object.
A row in the binary format is copied, not parsed. Any batch may be empty.

As in 0020, each outcome is its own UPDATE by primary key, before the
arbiter's lock; the intents go in after that lock, taken in a statement of
its own (0005); the chain's lock is only tried, after the intents (0021).
It returns (outcome?, id, NULL, NULL, NULL) per journal row updated (true)
or inserted (false), then (NULL, NULL, seq, prev_hash, hash) per audit
record, in order; no audit rows when the chain's lock was busy.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARBITER_LOCK = 0x67775F6172626974  # gateway.store.killswitch.ARBITER_LOCK ("gw_arbit")
WRITE_LOCK = 0x67775F7772697465  # gateway.store.audit.WRITE_LOCK ("gw_write")
_INTEGER = {"request_body_size", "prior_status", "status", "response_body_size"}
_BOOLEAN = {"reversible"}
INTENT_COLUMNS = (  # gateway.store.killswitch.INTENT_COLUMNS, as they were at 0022
    "id", "at", "request_id", "agent", "run", "model", "prompt_version", "tool_version",
    "upstream", "method", "path", "query", "rule", "decision", "policy_revision",
    "request_headers", "request_body", "request_body_sha256", "request_body_size",
    "request_content_type", "prior", "prior_status", "capture_path", "undo", "reversible",
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "error", "timings", "completed_at", "approval", "after",
    "mode", "would_decide", "sealed", "irreversible_reason", "process",
)
OUTCOME_COLUMNS = (  # gateway.store.codec.OUTCOME_COLUMNS, as they were at 0022, then the id
    "state", "status", "response_headers", "response_body", "response_body_sha256",
    "response_body_size", "undo", "reversible", "error", "timings", "completed_at", "after",
    "sealed_outcome", "id",
)


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _type(name: str, columns: Sequence[str]) -> str:
    return f"CREATE TYPE {name} AS (" + ", ".join(
        f'"{c}" {"integer" if c in _INTEGER else "boolean" if c in _BOOLEAN else "text"}'
        for c in columns) + ")"


FUNCTION = f"""
CREATE FUNCTION gateway_journal_write(intents journal_intent[], outcomes journal_outcome[],
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
    INSERT INTO journal ({_names(INTENT_COLUMNS)})
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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_type("journal_intent", INTENT_COLUMNS))
        op.execute(_type("journal_outcome", OUTCOME_COLUMNS))
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_journal_write(journal_intent[], journal_outcome[], "
                   "text[], text[], text[], text[], text[])")
        op.execute("DROP TYPE journal_outcome")
        op.execute("DROP TYPE journal_intent")
