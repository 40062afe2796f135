"""The audit hash chain on every backend: appends stay a valid chain under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import make_url

from gateway.core.audit import GENESIS, verify
from gateway.core.model import AuditRecord, Freeze, FreezeScope
from gateway.store.sql import SqlStore
from tests.store.conftest import EntryFactory

T0 = datetime(2024, 5, 2, 8, 0, 0, 1, tzinfo=UTC)


async def test_appends_form_a_verifiable_chain(store: SqlStore) -> None:
    appended = [
        await store.append_audit("alice", "approval.approve", {"id": "a1", "comment": "ok 👍"}, T0),
        await store.append_audit("bob", "rollback.apply",
                                 {"steps": [1, 2], "nested": {"x": None}}, T0),
        await store.append_audit("carol", "policy.reload", {}, T0 + timedelta(microseconds=1)),
    ]
    listed = await store.list_audit()
    assert listed == appended
    assert [r.seq for r in listed] == [1, 2, 3]
    assert listed[0].prev_hash == GENESIS
    assert listed[1].prev_hash == listed[0].hash
    result = verify(listed)
    assert result.ok and result.count == 3 and result.head == listed[-1].hash


async def test_list_after_and_limit(store: SqlStore) -> None:
    for n in range(5):
        await store.append_audit("alice", "test", {"n": n}, T0)
    assert [r.seq for r in await store.list_audit(after=2)] == [3, 4, 5]
    assert [r.seq for r in await store.list_audit(after=1, limit=2)] == [2, 3]
    assert await store.list_audit(after=5) == []


async def test_concurrent_appends_keep_the_chain(store: SqlStore) -> None:
    await asyncio.gather(*(store.append_audit("agent", "test", {"n": n}, T0)
                           for n in range(50)))
    records = await store.list_audit()
    assert [r.seq for r in records] == list(range(1, 51))
    assert verify(records).ok


async def test_two_stores_appending_at_once_keep_the_chain(store: SqlStore,
                                                           store_url: str) -> None:
    """Two engines with their own locks stand in for two processes."""
    other = SqlStore(store_url)
    await other.start()
    try:
        await asyncio.gather(*(s.append_audit("agent", "test", {"n": n}, T0)
                               for n, s in enumerate([store, other] * 25)))
    finally:
        await other.close()
    records = await store.list_audit()
    assert len(records) == 50 and verify(records).ok


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # triggers are PostgreSQL's
@pytest.mark.parametrize("statement", [
    "UPDATE audit SET actor = 'mallory'",
    "DELETE FROM audit",
    "TRUNCATE audit",
])
async def test_postgres_refuses_to_rewrite_the_audit(store: SqlStore, store_url: str,
                                                     statement: str) -> None:
    import asyncpg  # the PostgreSQL rows alone need the driver
    await store.append_audit("alice", "test", {}, T0)
    dsn = make_url(store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await connection.execute(statement)
    finally:
        await connection.close()
    assert verify(await store.list_audit()).count == 1


async def test_a_batch_is_chained_in_order_after_single_appends(store: SqlStore) -> None:
    await store.append_audit("alice", "first", {}, T0)
    batch = await store.append_audit_many([("bot", f"call.{i}", {"i": i}, T0) for i in range(5)])
    assert [r.seq for r in batch] == [2, 3, 4, 5, 6]
    records = await store.list_audit()
    assert [r.action for r in records] == ["first"] + [f"call.{i}" for i in range(5)]
    assert verify(records).ok


async def test_a_batch_hashed_by_the_store_verifies_whatever_its_details_hold(
        store: SqlStore) -> None:
    """On PostgreSQL the database hashes a batch (migration 0019) from the canonical text
    the store sends: text that JSON escapes, non-ASCII, big and float numbers, nesting."""
    details = [{"q": 'say "hi"\\n', "tab": "\t", "emoji": "é 👍 中"},
               {"big": 2**70, "f": 0.1, "neg": -1.5e-7, "list": [True, None, {"z": 1, "a": 2}]},
               {}]
    assert await store.append_audit_many([]) == []
    batch = await store.append_audit_many([("bot", "call", d, T0) for d in details])
    listed = await store.list_audit()
    assert listed == batch and [r.detail for r in listed] == details
    assert verify(listed).ok


async def test_every_kind_of_append_from_two_stores_makes_one_chain(store: SqlStore,
                                                                    store_url: str) -> None:
    """Operators' records, batches of decisions and freeze changes, from two stores (two
    processes) at once, all link into the one chain in the order they committed."""
    other = SqlStore(store_url)
    await other.start()

    async def appends(s: SqlStore, n: int) -> None:
        await s.append_audit("alice", "note", {"n": n}, T0)
        await s.append_audit_many([("bot", "call.allow", {"n": n, "i": i}, T0) for i in range(3)])
        target = f"crm-{n}"
        await s.engage(Freeze(FreezeScope.UPSTREAM, target, "test", "alice", T0, f"f{n}"))
        await s.release(FreezeScope.UPSTREAM, target, "alice", "done", T0)

    try:
        await asyncio.gather(*(appends(s, n) for n, s in enumerate([store, other] * 5)))
    finally:
        await other.close()
    records = await store.list_audit()
    assert len(records) == 10 * 6 and verify(records).ok
    assert [r.seq for r in records] == list(range(1, 61))
    assert sum(r.action == "killswitch.engage" for r in records) == 10


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # the ride is PostgreSQL's
async def test_a_batch_of_decisions_rides_on_the_next_intents_call(
        store: SqlStore, store_url: str, make_entry: EntryFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL, while intents' calls are under way, a batch of decisions waits
    (``hot_postgres.RIDE``) for the next one and is chained by it (migration 0021). That
    call only tries the chain's lock: when another writer holds it the intents go in at
    once and the batch is chained alone once the lock is free; when the call fails (for
    its intents), the batch is chained alone, not failed with it. With no intents' call
    under way a batch is chained alone at once (the next call would be a reply's)."""
    import asyncpg  # the PostgreSQL rows alone need the driver

    from gateway.store import hot_postgres
    from gateway.store.audit import WRITE_LOCK
    monkeypatch.setattr(hot_postgres, "RIDE", 3600.0)  # only an intents' call writes it
    hot = store._hot_path()  # noqa: SLF001

    async def riding(n: int) -> asyncio.Task[list[AuditRecord]]:
        task = asyncio.create_task(store.append_audit_many(
            [("bot", "call.allow", {"n": n, "i": i}, T0) for i in range(2)]))
        while not hot._riding_audit:  # noqa: SLF001 - queued, waiting (a yield, not a wait)
            await asyncio.sleep(0)
        return task

    first, second = make_entry(1), make_entry(2)
    await store.append_audit("alice", "note", {}, T0)
    assert [r.seq for r in await store.append_audit_many([("bot", "alone", {}, T0)])] == [2]
    monkeypatch.setattr(hot, "_in_flight", 1)  # as if an intents' call were under way
    appending = await riding(1)
    assert await store.journal_intent(first)
    assert [r.seq for r in await appending] == [3, 4]

    dsn = make_url(store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK:d})")
        appending = await riding(2)
        assert await store.journal_intent(second)  # not waiting for the chain's lock
        assert not appending.done()  # alone, behind the lock
        await holder.execute("COMMIT")
    finally:
        await holder.close()
    assert [r.seq for r in await appending] == [5, 6]

    appending = await riding(3)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the duplicate intent's error
        await store.journal_intent(second)  # already journaled: the call fails
    assert [r.seq for r in await appending] == [7, 8]
    records = await store.list_audit()
    assert [r.detail.get("n") for r in records] == [None, None, 1, 1, 2, 2, 3, 3]
    assert verify(records).ok
    assert await store.get_journal(first.id) == first
