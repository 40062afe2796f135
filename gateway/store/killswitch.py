"""The kill switch in the store: the arbiter statement and the generation.

The store, not any process's memory, decides whether a write may be
journaled, and a write that is not journaled is never sent. A journal intent
goes in with one statement that inserts it only if no active freeze covers
it (``INSERT ... SELECT ... WHERE NOT EXISTS``), never a read followed by a
write. What makes that exact under concurrency:

- SQLite: the batch runs in ``BEGIN IMMEDIATE``, holding the database's one
  write lock, and an engage holds the same lock; the two cannot interleave.
- PostgreSQL: the batch is one call of ``gateway_journal_write`` (migration
  0022; 0005 began it), which first takes the advisory lock ``ARBITER_LOCK`` in shared
  mode, in a statement of its own; an engage takes it exclusively before it
  inserts the freeze. So a batch either committed before the freeze did (the
  engage waited for it) or its insert began after the freeze committed and
  sees it (READ COMMITTED, and a VOLATILE function's every statement takes a
  new snapshot). No intent a freeze covers commits after that freeze.

Engages and releases exclude each other with the same lock (a release takes
it after the audit chain's, ``ENGAGE_LOCKS``). A PostgreSQL engage does not
wait for the chain's lock, which a batch of decisions holds for its round
trips: when it is taken, the engage's audit record goes into
``audit_pending`` in the engage's transaction and is linked right after
(``chain_pending_audit``: by the engaging process, a start, or a release,
which links pending records before its own).

Every engage and release also adds one to ``killswitch.generation`` in the
same transaction, so a process can check with one cheap read that its view
of the freezes is current.

``KillSwitch`` is ``SqlStore``'s side of it. An engage is one round trip on
PostgreSQL (``gateway_engage``) and a short transaction on SQLite
(``engage_in``): each dialect's hot path does its own (``HotPath.engage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.audit import canonical_head
from gateway.core.killswitch import InFlight
from gateway.core.model import Freeze, FreezeScope, iso, parse_iso
from gateway.ports import FreezeChange, Notice
from gateway.store import codec
from gateway.store.audit import WRITE_LOCK, append_in
from gateway.store.codec import JOURNAL_COLUMNS, quoted
from gateway.store.hot import HotPath, Tx

ARBITER_LOCK = 0x67775F6172626974  # "gw_arbit"
INTENT_COLUMNS = (*JOURNAL_COLUMNS, "process", "resend_key")

COVERING = ("f.released_at IS NULL AND (f.scope = 'global' "
            "OR (f.scope = 'upstream' AND f.target = {upstream}) "
            "OR (f.scope = 'agent' AND f.target = {agent}))")

# One intent, refused if a freeze covers it (SQLite, once per row of a batch):
# the row's values, then its upstream and agent again for the freeze check.
INSERT_INTENT_UNLESS_FROZEN = (
    f"INSERT INTO journal ({quoted(INTENT_COLUMNS)}) "
    f"SELECT {', '.join('?' for _ in INTENT_COLUMNS)} "
    f"WHERE NOT EXISTS (SELECT 1 FROM freezes f WHERE "
    f"{COVERING.format(upstream='?', agent='?')})"
)
_UPSTREAM, _AGENT = INTENT_COLUMNS.index("upstream"), INTENT_COLUMNS.index("agent")


def unless_frozen_args(row: Sequence[Any]) -> tuple[Any, ...]:
    """``INSERT_INTENT_UNLESS_FROZEN``'s parameters for an intent's row."""
    return (*row, row[_UPSTREAM], row[_AGENT])


# A batch of intents (SQLite), asked once under the write lock an engage also takes:
# with no freeze active, the batch goes in as plain inserts (none can appear before
# the commit); with one, each row is checked as above.
ANY_ACTIVE_FREEZE = "SELECT 1 FROM freezes f WHERE f.released_at IS NULL LIMIT 1"

# An operator's write (a rollback step): freezes stop agents, not recovery.
INSERT_INTENT = (f"INSERT INTO journal ({quoted(INTENT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' for _ in INTENT_COLUMNS)})")

FREEZE_COLUMNS = ("id", "scope", "target", "reason", "by", "at")
SELECT_ACTIVE_FREEZE = (  # the one active freeze of a scope and target (ux_freezes_active)
    f"SELECT {quoted(FREEZE_COLUMNS)} FROM freezes "
    "WHERE released_at IS NULL AND scope = ? AND COALESCE(target, '') = ?"
)
INSERT_FREEZE = (f"INSERT INTO freezes ({quoted(FREEZE_COLUMNS)}) "
                 f"VALUES ({', '.join('?' for _ in FREEZE_COLUMNS)})")
RELEASE_FREEZE = ("UPDATE freezes SET released_at = ?, released_by = ?, release_reason = ? "
                  "WHERE id = ?")
SELECT_GENERATION = "SELECT generation FROM killswitch WHERE id = 1"
BUMP_GENERATION = "UPDATE killswitch SET generation = generation + 1 WHERE id = 1"
SELECT_FREEZE_VIEW = (  # one statement, one snapshot: the generation and its freezes
    'SELECT k.generation, f.id, f.scope, f.target, f.reason, f."by", f.at '
    "FROM killswitch k LEFT JOIN freezes f ON f.released_at IS NULL "
    "WHERE k.id = 1 ORDER BY f.at, f.id"
)
SELECT_PENDING_INTENTS = (  # SQLite: served by the partial index ix_journal_intents
    "SELECT id, agent, upstream, method, path, process FROM journal "
    "WHERE state = 'intent' AND at >= ? ORDER BY at, id"
)
PG_PENDING_INTENTS = (  # PostgreSQL: the open intents' own table (0023)
    "SELECT id, agent, upstream, method, path, process FROM journal_open "
    "WHERE at >= ? ORDER BY at, id"
)


# PostgreSQL: an engage in one call (migration 0018): the arbiter's lock, the freeze
# unless one of its scope and target is active, the generation, the audit record
# (chained, or pending when the chain's lock is taken), the bus's message to the
# others with the commit; then (inserted?, generation, pending?, freeze columns...)
# per active freeze, one row at least.
PG_ENGAGE = "SELECT * FROM gateway_engage(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_PENDING_AUDIT = ("SELECT id, at, actor, action, detail FROM audit_pending "
                        "ORDER BY at, id")
DELETE_PENDING_AUDIT = "DELETE FROM audit_pending WHERE id = ?"
ANY_PENDING_AUDIT = "SELECT 1 FROM audit_pending LIMIT 1"
PG_CHAIN_PENDING = "SELECT gateway_chain_pending()"  # chain_pending_in in one call (0018)


def freeze_detail(scope: FreezeScope, target: str | None, reason: str) -> dict[str, Any]:
    """What the audit record of an engage or release says."""
    return {"scope": scope.value, "target": target, "reason": reason}


def engage_args(freeze: Freeze) -> tuple[Any, ...]:
    """``PG_ENGAGE``'s parameters: the freeze, and its audit record's detail and
    canonical head (the function seals the record after the last one)."""
    detail = freeze_detail(freeze.scope, freeze.target, freeze.reason)
    return (freeze.id, freeze.scope.value, freeze.target, freeze.reason, freeze.by,
            iso(freeze.at), codec.dumps(detail),
            canonical_head(freeze.at, freeze.by, "killswitch.engage", detail))


def engaged(freeze: Freeze, rows: Sequence[Sequence[Any]], announced: bool) -> FreezeChange:
    """The change ``PG_ENGAGE`` reports (``announced``: a message was given to send)."""
    active = [codec.freeze_from_values(*row[3:]) for row in rows if row[3] is not None]
    if rows[0][0]:
        return FreezeChange(freeze, int(rows[0][1]), active, announced, bool(rows[0][2]))
    same = next(f for f in active if f.scope == freeze.scope
                and (f.target or "") == (freeze.target or ""))
    return FreezeChange(same, int(rows[0][1]), active)


# The audit chain's lock, then the arbiter's: SQLite's engage, and every release (which
# so excludes a PostgreSQL engage, which takes the arbiter's alone, see migration 0018).
ENGAGE_LOCKS = (WRITE_LOCK, ARBITER_LOCK)


async def engage_in(tx: Tx, freeze: Freeze) -> FreezeChange:
    """The engage ``PG_ENGAGE`` does, as statements in ``tx`` (holding ``ENGAGE_LOCKS``).

    One read of the kill switch, first: no other engage or release can change it
    while this transaction holds WRITE_LOCK, so the state it leaves is that read
    plus this freeze (a round trip fewer than reading it again at the end)."""
    before = await change_in(tx, None)
    same = next((f for f in before.active if f.scope == freeze.scope
                 and (f.target or "") == (freeze.target or "")), None)
    if same is not None:
        return FreezeChange(same, before.generation, before.active)
    await tx.execute(INSERT_FREEZE, (freeze.id, freeze.scope.value, freeze.target,
                                     freeze.reason, freeze.by, iso(freeze.at)))
    await tx.execute(BUMP_GENERATION)
    await append_in(tx, [(freeze.by, "killswitch.engage",
                          freeze_detail(freeze.scope, freeze.target, freeze.reason), freeze.at)])
    return FreezeChange(freeze, before.generation + 1, [*before.active, freeze])


async def chain_pending_in(tx: Tx) -> int:
    """Link the engages' pending audit records into the chain, in ``tx`` (holding
    ``WRITE_LOCK``): the hash is the one the engage would have sealed (``append_in``)."""
    rows = await tx.fetch(SELECT_PENDING_AUDIT)
    if rows:
        await append_in(tx, [(actor, action, orjson.loads(detail), parse_iso(at))
                             for _, at, actor, action, detail in rows])
        for row in rows:
            await tx.execute(DELETE_PENDING_AUDIT, (row[0],))
    return len(rows)


async def change_in(tx: Tx, freeze: Freeze | None) -> FreezeChange:
    """The change, with the generation and the freezes as this transaction leaves them."""
    rows = await tx.fetch(SELECT_FREEZE_VIEW)
    return FreezeChange(freeze, int(rows[0][0]), [codec.freeze_from_values(*row[1:])
                                                  for row in rows if row[1] is not None])


class KillSwitch:
    """``active_freezes`` ... ``pending_intents`` of ``ports.FreezeStore`` (a mixin of
    ``SqlStore``): through the driver, like the journal's writes they stop."""

    if TYPE_CHECKING:  # SqlStore's
        _postgres: bool

        def _hot_path(self) -> HotPath: ...

    async def active_freezes(self) -> list[Freeze]:
        return (await self.freeze_view())[1]

    async def freeze_view(self) -> tuple[int, list[Freeze]]:
        """The kill switch's generation and the freezes active at it (one snapshot)."""
        rows = await self._hot_path().fetch(SELECT_FREEZE_VIEW, ())
        freezes = [codec.freeze_from_values(*row[1:]) for row in rows if row[1] is not None]
        return int(rows[0][0]), freezes

    async def killswitch_generation(self) -> int:
        rows = await self._hot_path().fetch(SELECT_GENERATION, ())
        return int(rows[0][0])

    async def pending_intents(self, since: datetime) -> list[InFlight]:
        """Intents journaled at or after ``since`` that have no outcome yet."""
        rows = await self._hot_path().fetch(
            PG_PENDING_INTENTS if self._postgres else SELECT_PENDING_INTENTS, (iso(since),))
        return [InFlight(*row) for row in rows]

    async def engage(self, freeze: Freeze, announce: Notice | None = None) -> FreezeChange:
        """Through the driver, in one short transaction: an engage must not queue
        behind the stream of journal writes it is about to stop."""
        return await self._hot_path().engage(freeze, announce)

    async def warm_engage(self) -> None:
        """Make the first engage as quick as the next (PostgreSQL: ``warm_engage`` of its
        hot path; nothing to do on SQLite)."""
        await self._hot_path().warm_engage()

    async def chain_pending_audit(self) -> int:
        """One read when nothing is pending; else one call: only PostgreSQL leaves
        records pending, and links them with ``gateway_chain_pending`` (0018)."""
        if not await self._hot_path().fetch(ANY_PENDING_AUDIT, ()):
            return 0
        return int((await self._hot_path().fetch(PG_CHAIN_PENDING, ()))[0][0])

    async def release(self, scope: FreezeScope, target: str | None, by: str, reason: str,
                      at: datetime) -> FreezeChange:
        async with self._hot_path().transaction(ENGAGE_LOCKS) as tx:
            await chain_pending_in(tx)  # the engages' records first: the chain keeps order
            rows = await tx.fetch(SELECT_ACTIVE_FREEZE, (scope.value, target or ""))
            if not rows:
                return await change_in(tx, None)
            released = codec.freeze_from_values(*rows[0])
            await tx.execute(RELEASE_FREEZE, (iso(at), by, reason, released.id))
            await tx.execute(BUMP_GENERATION)
            await append_in(tx, [(by, "killswitch.release",
                                  freeze_detail(scope, target, reason), at)])
            return await change_in(tx, released)
