"""A batch of audit records appended in one round trip on PostgreSQL.

``gateway_audit_append(at[], actor[], action[], detail[], head[])`` does in
one call what an append did in four round trips (BEGIN with the chain's lock,
read the last link, insert the batch, COMMIT): it takes ``WRITE_LOCK`` (the
advisory lock every writer of the chain takes, ``gateway.store.audit``), reads
the last link, and inserts the records in order, each hashed after the one
before it as ``gateway_engage`` (0017) hashes its record: the caller passes
each record's canonical text up to the ``seq``, which sorts last
(``gateway.core.audit.canonical_head``). It returns (seq, prev_hash, hash) per
record, in order. Called alone it is its own transaction, so the lock is
held until that transaction commits, as the BEGIN ... COMMIT held it.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITE_LOCK = 0x67775F7772697465  # gateway.store.audit.WRITE_LOCK ("gw_write")
APPEND = f"""
CREATE FUNCTION gateway_audit_append(p_at text[], p_actor text[], p_action text[],
                                     p_detail text[], p_head text[])
RETURNS TABLE (out_seq integer, out_prev_hash text, out_hash text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer := COALESCE(array_length(p_at, 1), 0);
    last_seq integer;
    last_hash text;
    seqs integer[] := '{{}}';
    prevs text[] := '{{}}';
    hashes text[] := '{{}}';
BEGIN
    IF n = 0 THEN
        RETURN;  -- nothing to chain: no lock for an engage to wait behind
    END IF;
    PERFORM pg_advisory_xact_lock({WRITE_LOCK});
    SELECT a.seq, a.hash INTO last_seq, last_hash FROM audit a ORDER BY a.seq DESC LIMIT 1;
    last_seq := COALESCE(last_seq, 0);
    last_hash := COALESCE(last_hash, repeat('0', 64));
    FOR i IN 1 .. n LOOP  -- the hashes one after the other, then one INSERT for all
        last_seq := last_seq + 1;
        seqs := seqs || last_seq;
        prevs := prevs || last_hash;
        last_hash := encode(sha256(convert_to(last_hash || p_head[i] || last_seq::text || '}}',
                                              'UTF8')), 'hex');
        hashes := hashes || last_hash;
    END LOOP;
    INSERT INTO audit (seq, at, actor, action, detail, prev_hash, hash)
    SELECT * FROM unnest(seqs, p_at, p_actor, p_action, p_detail, prevs, hashes);
    RETURN QUERY SELECT u.s, u.p, u.h FROM unnest(seqs, prevs, hashes) AS u(s, p, h) ORDER BY u.s;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gateway_audit_append(text[], text[], text[], text[], text[])")
