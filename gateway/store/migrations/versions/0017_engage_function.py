"""The engage in one round trip on PostgreSQL.

``gateway_engage(...)`` does in one call what an engage did in seven round
trips: take the audit chain's lock and the kill switch's arbiter lock (it
waits for intent batches under way, see ``gateway.store.killswitch``), insert
the freeze unless one of the same scope and target is active, add one to the
generation, append the audit record (its hash computed here: the caller
passes the canonical text up to the ``seq``, which sorts last, see
``gateway.core.audit.canonical_head``), and return the freezes active as it
leaves them, first column true when this call inserted the freeze. Each
statement of a VOLATILE function takes a new snapshot, so what follows the
locks sees everything committed before they were granted.

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITE_LOCK = 0x67775F7772697465  # gateway.store.audit.WRITE_LOCK ("gw_write")
ARBITER_LOCK = 0x67775F6172626974  # gateway.store.killswitch.ARBITER_LOCK ("gw_arbit")
ENGAGE = f"""
CREATE FUNCTION gateway_engage(p_id text, p_scope text, p_target text, p_reason text,
                               p_by text, p_at text, p_detail text, p_head text)
RETURNS TABLE (out_engaged boolean, out_generation bigint, out_id text, out_scope text,
               out_target text, out_reason text, out_by text, out_at text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_id text;
    last_seq integer;
    last_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock({WRITE_LOCK});
    PERFORM pg_advisory_xact_lock({ARBITER_LOCK});
    SELECT f.id INTO found_id FROM freezes f
    WHERE f.released_at IS NULL AND f.scope = p_scope
      AND COALESCE(f.target, '') = COALESCE(p_target, '');
    IF found_id IS NULL THEN
        INSERT INTO freezes (id, scope, target, reason, "by", at)
        VALUES (p_id, p_scope, p_target, p_reason, p_by, p_at);
        UPDATE killswitch SET generation = generation + 1 WHERE id = 1;
        SELECT a.seq, a.hash INTO last_seq, last_hash FROM audit a ORDER BY a.seq DESC LIMIT 1;
        last_seq := COALESCE(last_seq, 0) + 1;
        last_hash := COALESCE(last_hash, repeat('0', 64));
        INSERT INTO audit (seq, at, actor, action, detail, prev_hash, hash)
        VALUES (last_seq, p_at, p_by, 'killswitch.engage', p_detail, last_hash,
                encode(sha256(convert_to(last_hash || p_head || last_seq::text || '}}',
                                         'UTF8')), 'hex'));
    END IF;
    RETURN QUERY
    SELECT found_id IS NULL, k.generation, f.id, f.scope, f.target, f.reason, f."by", f.at
    FROM killswitch k LEFT JOIN freezes f ON f.released_at IS NULL
    WHERE k.id = 1 ORDER BY f.at, f.id;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ENGAGE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_engage(text, text, text, text, text, text, text, text)")
