"""Kill-switch freezes on every backend: one active per scope and target, audited; the
store as the arbiter of journal intents; the generation."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.core.audit import verify
from gateway.core.killswitch import InFlight
from gateway.core.model import Freeze, FreezeScope, JournalOutcome, JournalQuery
from gateway.store.hot import numbered
from gateway.store.killswitch import ARBITER_LOCK, INSERT_FREEZE
from gateway.store.sql import SqlStore
from tests.store.conftest import EntryFactory

T0 = datetime(2024, 5, 1, 9, 30, 0, 654321, tzinfo=UTC)
GLOBAL, UPSTREAM, AGENT = FreezeScope.GLOBAL, FreezeScope.UPSTREAM, FreezeScope.AGENT


def freeze(scope: FreezeScope, target: str | None, n: int = 0, reason: str = "incident") -> Freeze:
    return Freeze(scope, target, reason, "alice", T0 + timedelta(seconds=n), id=f"f{n}")


async def test_engage_persists_and_audits(store: SqlStore) -> None:
    engaged = freeze(UPSTREAM, "crm", reason="refunds look wrong ✋")
    assert (await store.engage(engaged)).freeze == engaged
    assert await store.active_freezes() == [engaged]

    [record] = await store.list_audit()
    assert (record.actor, record.action, record.at) == ("alice", "killswitch.engage", T0)
    assert record.detail == {"scope": "upstream", "target": "crm",
                             "reason": "refunds look wrong ✋"}


async def test_engaging_an_active_scope_again_changes_nothing(store: SqlStore) -> None:
    first = freeze(GLOBAL, None, 1)
    await store.engage(first)
    assert (await store.engage(freeze(GLOBAL, None, 2, reason="again"))).freeze == first
    assert await store.active_freezes() == [first]
    assert len(await store.list_audit()) == 1


async def test_scopes_and_targets_are_independent(store: SqlStore) -> None:
    freezes = [freeze(GLOBAL, None, 0), freeze(UPSTREAM, "crm", 1),
               freeze(UPSTREAM, "billing", 2), freeze(AGENT, "crm", 3)]
    for each in freezes:
        await store.engage(each)
    assert await store.active_freezes() == freezes


async def test_release_then_engage_again(store: SqlStore) -> None:
    first = freeze(AGENT, "support-bot", 1)
    other = freeze(UPSTREAM, "crm", 2)
    await store.engage(first)
    await store.engage(other)

    released = (await store.release(AGENT, "support-bot", "bob", "fixed", T0)).freeze
    assert released == first
    assert await store.active_freezes() == [other]
    assert (await store.release(AGENT, "support-bot", "bob", "twice", T0)).freeze is None
    assert (await store.release(GLOBAL, None, "bob", "never engaged", T0)).freeze is None

    again = freeze(AGENT, "support-bot", 3)
    assert (await store.engage(again)).freeze == again
    assert await store.active_freezes() == [other, again]

    records = await store.list_audit()
    assert [r.action for r in records] == ["killswitch.engage", "killswitch.engage",
                                           "killswitch.release", "killswitch.engage"]
    assert (records[2].actor, records[2].detail) == (
        "bob", {"scope": "agent", "target": "support-bot", "reason": "fixed"})
    assert verify(records).ok


async def test_concurrent_engages_leave_one_freeze(store: SqlStore) -> None:
    results = [change.freeze for change in await asyncio.gather(
        *(store.engage(freeze(GLOBAL, None, n)) for n in range(10)))]
    active = await store.active_freezes()
    assert len(active) == 1 and set(results) == set(active)
    assert len(await store.list_audit()) == 1


async def test_two_stores_on_one_database_share_the_freeze(store: SqlStore,
                                                           store_url: str) -> None:
    other = SqlStore(store_url)
    await other.start()
    try:
        results = [change.freeze for change in await asyncio.gather(
            *(s.engage(freeze(UPSTREAM, "crm", n)) for n, s in enumerate([store, other] * 4)))]
        assert len(set(results)) == 1
        assert await other.active_freezes() == await store.active_freezes() == [results[0]]
        await other.release(UPSTREAM, "crm", "bob", "done", T0)
        assert await store.active_freezes() == []
    finally:
        await other.close()


# The arbiter: an intent a freeze covers is refused by the store itself ----------
async def test_an_intent_a_freeze_covers_is_refused_and_not_written(
        store: SqlStore, make_entry: EntryFactory) -> None:
    await store.engage(freeze(UPSTREAM, "crm", 1))
    await store.engage(freeze(AGENT, "support-bot", 2))
    entries = [make_entry(1, upstream="crm", agent="other-bot"),
               make_entry(2, upstream="billing", agent="support-bot"),
               make_entry(3, upstream="billing", agent="other-bot"),
               make_entry(4, upstream="crm", agent="support-bot")]
    # concurrent callers: one group-committed batch, judged row by row
    results = await asyncio.gather(*(store.journal_intent(e) for e in entries))
    assert results == [False, False, True, False]
    assert [e.id for e in await store.list_journal(JournalQuery())] == [entries[2].id]


async def test_a_global_freeze_refuses_every_agent_write_but_not_recovery(
        store: SqlStore, make_entry: EntryFactory) -> None:
    await store.engage(freeze(GLOBAL, None))
    assert await store.journal_intent(make_entry(1)) is False
    assert await store.journal_intent(make_entry(2), unless_frozen=False) is True  # rollback
    assert [e.id for e in await store.list_journal(JournalQuery())] == [f"{2:032x}"]


async def test_after_a_release_intents_go_in_again(store: SqlStore,
                                                   make_entry: EntryFactory) -> None:
    await store.engage(freeze(UPSTREAM, "crm"))
    assert await store.journal_intent(make_entry(1, upstream="crm")) is False
    await store.release(UPSTREAM, "crm", "bob", "fixed", T0)
    assert await store.journal_intent(make_entry(1, upstream="crm")) is True


async def test_another_process_freeze_refuses_this_process_intent(
        store: SqlStore, store_url: str, make_entry: EntryFactory) -> None:
    """No push involved: the store alone decides, whatever this process believes."""
    other = SqlStore(store_url)
    await other.start()
    try:
        assert await store.journal_intent(make_entry(1)) is True
        await other.engage(freeze(GLOBAL, None))
        assert await store.journal_intent(make_entry(2)) is False
    finally:
        await other.close()


async def test_an_intent_waiting_on_an_engage_under_way_is_refused_once_it_commits(
        store: SqlStore, store_url: str, make_entry: EntryFactory) -> None:
    """The race the arbiter exists for: the freeze's transaction has begun (and holds
    its lock) when the intent is sent. The intent waits; when the freeze commits, the
    intent sees it. It can never commit after the freeze."""
    holder = await _EngageUnderWay.begin(store_url)
    try:
        intent = asyncio.create_task(store.journal_intent(make_entry(1)))
        await holder.wait_until_blocked(store, intent)
        await holder.commit()
        assert await intent is False
    finally:
        await holder.close()
    assert await store.list_journal(JournalQuery()) == []
    assert [f.id for f in await store.active_freezes()] == ["under-way"]


async def test_a_batch_waiting_on_an_engage_under_way_is_refused_once_it_commits(
        store: SqlStore, store_url: str, make_entry: EntryFactory) -> None:
    """As above for a group-committed batch (SQLite asks for a freeze once per batch,
    under the write lock the engage holds)."""
    async def both() -> list[bool]:
        return list(await asyncio.gather(*(store.journal_intent(make_entry(i))
                                           for i in (1, 2))))

    holder = await _EngageUnderWay.begin(store_url)
    try:
        intents = asyncio.create_task(both())
        await holder.wait_until_blocked(store, intents)  # type: ignore[arg-type]
        await holder.commit()
        assert await intents == [False, False]
    finally:
        await holder.close()
    assert await store.list_journal(JournalQuery()) == []


class _EngageUnderWay:
    """A freeze inserted in a transaction that has taken what an engage takes."""

    def __init__(self, connection: Any, postgres: bool) -> None:
        self.connection, self.postgres = connection, postgres

    @classmethod
    async def begin(cls, store_url: str) -> _EngageUnderWay:
        row = ("under-way", "global", None, "race", "alice", "2024-05-01T09:30:00.000000Z")
        if store_url.startswith("postgresql"):
            import asyncpg  # the PostgreSQL rows alone need the driver

            connection = await asyncpg.connect(store_url.replace("+asyncpg", ""))
            await connection.execute("BEGIN")
            await connection.execute(f"SELECT pg_advisory_xact_lock({ARBITER_LOCK})")
            await connection.execute(numbered(INSERT_FREEZE), *row)
            return cls(connection, True)
        connection = sqlite3.connect(store_url.split("///", 1)[1], isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")  # the database's write lock
        connection.execute(INSERT_FREEZE, row)
        return cls(connection, False)

    async def wait_until_blocked(self, store: SqlStore, intent: asyncio.Task[bool]) -> None:
        """Until the intent is waiting for the lock (a condition, with a deadline)."""
        async with asyncio.timeout(30):
            while not await self._blocked(store):
                assert not intent.done(), intent.result()
                await asyncio.sleep(0.005)

    async def _blocked(self, store: SqlStore) -> bool:
        if self.postgres:
            return bool(await self.connection.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
        return store._hot._lock.locked()  # type: ignore[union-attr]  # waiting out busy

    async def commit(self) -> None:
        if self.postgres:
            await self.connection.execute("COMMIT")
        else:
            self.connection.execute("COMMIT")

    async def close(self) -> None:
        if self.postgres:
            await self.connection.close()
        else:
            self.connection.close()


# The generation: one more at every engage and release -----------------------------
async def test_engage_and_release_move_the_generation(store: SqlStore) -> None:
    start, nothing = await store.freeze_view()
    assert nothing == []
    engaged = freeze(UPSTREAM, "crm")
    await store.engage(engaged)
    assert await store.freeze_view() == (start + 1, [engaged])
    await store.engage(freeze(UPSTREAM, "crm", 2))  # already frozen: no change
    assert await store.killswitch_generation() == start + 1
    await store.release(UPSTREAM, "crm", "bob", "fixed", T0)
    await store.release(UPSTREAM, "crm", "bob", "again", T0)  # nothing to release
    assert await store.freeze_view() == (start + 2, [])


async def test_open_intents_name_their_process(store: SqlStore, make_entry: EntryFactory,
                                               outcome: JournalOutcome) -> None:
    old, open_, answered = make_entry(1), make_entry(5), make_entry(6)
    for entry in (old, open_, answered):
        assert await store.journal_intent(entry)
    await store.journal_outcome(answered.id, outcome)
    pending = await store.pending_intents(make_entry(2).at)
    assert pending == [InFlight(open_.id, open_.agent, open_.upstream, open_.method,
                                open_.path, store.process)]


async def test_a_change_says_where_it_left_the_kill_switch(store: SqlStore) -> None:
    first, second = freeze(UPSTREAM, "crm", 1), freeze(AGENT, "bot", 2)
    assert (await store.engage(first)).freeze == first
    change = await store.engage(second)
    assert (change.freeze, change.active) == (second, [first, second])
    assert change.generation == await store.killswitch_generation()
    again = await store.engage(freeze(AGENT, "bot", 3))  # in force already: nothing moves
    assert (again.freeze, again.generation, again.active) == (second, change.generation,
                                                             [first, second])
    released = await store.release(UPSTREAM, "crm", "bob", "fixed", T0)
    assert (released.freeze, released.generation, released.active) == (
        first, change.generation + 1, [second])
    nothing = await store.release(UPSTREAM, "crm", "bob", "again", T0)
    assert (nothing.freeze, nothing.generation) == (None, released.generation)
