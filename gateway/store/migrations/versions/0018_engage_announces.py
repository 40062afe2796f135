"""The engage on PostgreSQL: announced by its own commit, and not waiting for the
audit chain.

``gateway_engage(..., p_channel, p_message)`` does what migration 0017's
engage did, with two differences:

- It queues the bus's ``engage`` message with ``pg_notify`` when it inserts
  the freeze. PostgreSQL delivers a NOTIFY when its transaction commits, so
  the other processes hear of the freeze at the commit, not one round trip
  of the engaging process later (``gateway.store.bus``). The caller builds
  the message (``PgBus.at_commit``); the function sets its ``generation``
  and takes the time the call waited for its locks off its ``wait`` (the
  seconds the others have to answer). ``p_channel`` NULL: no message.
- It waits for the arbiter's lock only (the intent batches under way, see
  ``gateway.store.killswitch``), not for the audit chain's, which a batch of
  decisions holds for its round trips. It links its audit record into the
  chain when it gets that lock at once and no earlier record is pending;
  otherwise the record goes into ``audit_pending`` in the same transaction,
  so it is as durable as the freeze, with the canonical text its hash needs,
  and is linked right after the commit (``gateway_chain_pending()``, one
  round trip), or by the next start or release.
  Engages and releases still exclude each other: a release takes the
  arbiter's lock too, after the chain's.

It returns, after the engaged flag and the generation, whether the record is
pending, then the freeze columns.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITE_LOCK = 0x67775F7772697465  # gateway.store.audit.WRITE_LOCK ("gw_write")
ARBITER_LOCK = 0x67775F6172626974  # gateway.store.killswitch.ARBITER_LOCK ("gw_arbit")
ENGAGE = f"""
CREATE FUNCTION gateway_engage(p_id text, p_scope text, p_target text, p_reason text,
                               p_by text, p_at text, p_detail text, p_head text,
                               p_channel text, p_message text)
RETURNS TABLE (out_engaged boolean, out_generation bigint, out_pending boolean,
               out_id text, out_scope text, out_target text, out_reason text, out_by text,
               out_at text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_id text;
    chained boolean;
    pending boolean := false;
    last_seq integer;
    last_hash text;
    new_generation bigint;
    message jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock({ARBITER_LOCK});
    chained := pg_try_advisory_xact_lock({WRITE_LOCK});
    SELECT f.id INTO found_id FROM freezes f
    WHERE f.released_at IS NULL AND f.scope = p_scope
      AND COALESCE(f.target, '') = COALESCE(p_target, '');
    IF found_id IS NULL THEN
        INSERT INTO freezes (id, scope, target, reason, "by", at)
        VALUES (p_id, p_scope, p_target, p_reason, p_by, p_at);
        UPDATE killswitch SET generation = generation + 1 WHERE id = 1
        RETURNING generation INTO new_generation;
        pending := NOT chained OR EXISTS (SELECT 1 FROM audit_pending);
        IF pending THEN
            INSERT INTO audit_pending (id, at, actor, action, detail, head)
            VALUES (p_id, p_at, p_by, 'killswitch.engage', p_detail, p_head);
        ELSE
            SELECT a.seq, a.hash INTO last_seq, last_hash
            FROM audit a ORDER BY a.seq DESC LIMIT 1;
            last_seq := COALESCE(last_seq, 0) + 1;
            last_hash := COALESCE(last_hash, repeat('0', 64));
            INSERT INTO audit (seq, at, actor, action, detail, prev_hash, hash)
            VALUES (last_seq, p_at, p_by, 'killswitch.engage', p_detail, last_hash,
                    encode(sha256(convert_to(last_hash || p_head || last_seq::text || '}}',
                                             'UTF8')), 'hex'));
        END IF;
        IF p_channel IS NOT NULL THEN
            message := p_message::jsonb;
            PERFORM pg_notify(p_channel, (message || jsonb_build_object(
                'generation', new_generation,
                'wait', greatest(0, (message->>'wait')::float8 - extract(
                    epoch FROM clock_timestamp() - statement_timestamp())::float8)))::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT found_id IS NULL, k.generation, pending,
           f.id, f.scope, f.target, f.reason, f."by", f.at
    FROM killswitch k LEFT JOIN freezes f ON f.released_at IS NULL
    WHERE k.id = 1 ORDER BY f.at, f.id;
END
$$
"""

CHAIN_PENDING = f"""
CREATE FUNCTION gateway_chain_pending() RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    pending record;
    last_seq integer;
    last_hash text;
    linked integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock({WRITE_LOCK});
    SELECT a.seq, a.hash INTO last_seq, last_hash FROM audit a ORDER BY a.seq DESC LIMIT 1;
    last_seq := COALESCE(last_seq, 0);
    last_hash := COALESCE(last_hash, repeat('0', 64));
    FOR pending IN SELECT * FROM audit_pending p ORDER BY p.at, p.id LOOP
        last_seq := last_seq + 1;
        INSERT INTO audit (seq, at, actor, action, detail, prev_hash, hash)
        VALUES (last_seq, pending.at, pending.actor, pending.action, pending.detail, last_hash,
                encode(sha256(convert_to(last_hash || pending.head || last_seq::text || '}}',
                                         'UTF8')), 'hex'))
        RETURNING hash INTO last_hash;
        DELETE FROM audit_pending WHERE id = pending.id;
        linked := linked + 1;
    END LOOP;
    RETURN linked;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("at", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ENGAGE)
        op.execute(CHAIN_PENDING)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_engage(text, text, text, text, text, text, text, text, "
                   "text, text)")
        op.execute("DROP FUNCTION gateway_chain_pending()")
    op.drop_table("audit_pending")
