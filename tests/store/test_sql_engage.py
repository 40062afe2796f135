"""The engage's store transaction (on PostgreSQL one call of ``gateway_engage``,
migration 0018): its audit record, sealed by the store, links into the chain
the gateway seals itself, whatever the text, on every backend; on PostgreSQL,
kept pending rather than waiting for the chain's lock, and linked after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.core.audit import canonical, canonical_head, chain_hash, verify
from gateway.core.model import Freeze, FreezeScope
from gateway.services.killswitch import FreezeState
from gateway.store.audit import WRITE_LOCK
from gateway.store.killswitch import ARBITER_LOCK
from gateway.store.sql import SqlStore

T0 = datetime(2025, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def test_canonical_head_is_canonical_without_its_end() -> None:
    detail = {"scope": "global", "target": None, "reason": "ünïcödé \"quoted\" \\ 🚨"}
    head = canonical_head(T0, "zoë", "killswitch.engage", detail)
    assert (head + "12}").encode() == canonical(12, T0, "zoë", "killswitch.engage", detail)


async def test_an_engage_links_into_the_chain_around_it(store: SqlStore) -> None:
    await store.append_audit("ops", "call.allow", {"n": 1}, T0)
    reason = "refunds look wrong ✋ \"quoted\" \\ \u2028 <tag>"
    engaged = Freeze(FreezeScope.UPSTREAM, "crm", reason, "zoë", T0 + timedelta(seconds=1),
                     id="f-1")
    change = await store.engage(engaged)
    assert (change.freeze, change.active) == (engaged, [engaged])
    await store.append_audit("ops", "call.allow", {"n": 2}, T0 + timedelta(seconds=2))

    records = await store.list_audit()
    assert [r.action for r in records] == ["call.allow", "killswitch.engage", "call.allow"]
    record = records[1]
    assert (record.actor, record.at, record.detail) == (
        "zoë", engaged.at, {"scope": "upstream", "target": "crm", "reason": reason})
    assert record.hash == chain_hash(records[0].hash, 2, engaged.at, "zoë",
                                     "killswitch.engage", record.detail)
    assert verify(records).ok


async def test_a_second_engage_of_the_same_scope_returns_the_first(store: SqlStore) -> None:
    first = Freeze(FreezeScope.GLOBAL, None, "one", "alice", T0, id="f-1")
    other = Freeze(FreezeScope.AGENT, "bot", "two", "alice", T0 + timedelta(seconds=1), id="f-2")
    one = await store.engage(first)
    two = await store.engage(other)
    again = await store.engage(Freeze(FreezeScope.GLOBAL, None, "three", "bob",
                                      T0 + timedelta(seconds=2), id="f-3"))
    assert (one.generation, two.generation) == (one.generation, one.generation + 1)
    assert (again.freeze, again.generation, again.active) == (first, two.generation,
                                                              [first, other])
    assert [r.action for r in await store.list_audit()] == ["killswitch.engage"] * 2
    assert verify(await store.list_audit()).ok


async def test_the_first_record_of_a_chain_can_be_an_engage(store: SqlStore) -> None:
    await store.engage(Freeze(FreezeScope.GLOBAL, None, "first", "alice", T0, id="f-1"))
    [record] = await store.list_audit()
    assert (record.seq, record.prev_hash) == (1, "0" * 64)
    assert verify([record]).ok


async def test_an_engage_does_not_wait_for_the_chain_and_its_record_is_linked_after(
        store: SqlStore, store_url: str) -> None:
    await store.append_audit("ops", "call.allow", {"n": 1}, T0)
    first = Freeze(FreezeScope.UPSTREAM, "crm", "one", "zoë", T0 + timedelta(seconds=1), id="f-1")
    second = Freeze(FreezeScope.AGENT, "bot", "two", "bob", T0 + timedelta(seconds=2), id="f-2")
    if store_url.startswith("sqlite"):  # one write lock: the engage appends in its transaction
        assert not (await store.engage(first)).audit_pending
        assert not (await store.engage(second)).audit_pending
    else:
        async with store._hot_path().transaction((WRITE_LOCK,)) as chain:  # a batch of decisions
            assert (await store.engage(first)).audit_pending  # returned while the chain is held
            await chain.execute("SELECT 1")
        assert (await store.engage(second)).audit_pending  # behind the first: order is kept
        assert await store.chain_pending_audit() == 2
    assert await store.chain_pending_audit() == 0
    records = await store.list_audit()
    assert [(r.action, r.actor) for r in records] == [
        ("call.allow", "ops"), ("killswitch.engage", "zoë"), ("killswitch.engage", "bob")]
    assert records[1].detail == {"scope": "upstream", "target": "crm", "reason": "one"}
    assert records[2].at == second.at
    assert verify(records).ok


async def test_a_release_links_the_pending_engage_records_before_its_own(
        store: SqlStore, store_url: str) -> None:
    freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "zoë", T0, id="f-1")
    if store_url.startswith("sqlite"):
        await store.engage(freeze)
    else:
        async with store._hot_path().transaction((WRITE_LOCK,)):
            assert (await store.engage(freeze)).audit_pending
    released = await store.release(FreezeScope.GLOBAL, None, "bob", "over",
                                   T0 + timedelta(seconds=1))
    assert released.freeze == freeze
    records = await store.list_audit()
    assert [r.action for r in records] == ["killswitch.engage", "killswitch.release"]
    assert verify(records).ok
    assert await store.chain_pending_audit() == 0


async def test_a_start_links_what_an_engage_left_pending(store: SqlStore,
                                                         store_url: str) -> None:
    """The engaging process died between its commit and the link: the next start links it."""
    freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "zoë", T0, id="f-1")
    if store_url.startswith("sqlite"):  # never left pending: the start finds nothing to do
        assert not (await store.engage(freeze)).audit_pending
    else:
        async with store._hot_path().transaction((WRITE_LOCK,)):
            assert (await store.engage(freeze)).audit_pending
    state = FreezeState(store)
    await state.start()
    await asyncio.wait(list(state._tasks))  # the link it started
    await state.stop()
    records = await store.list_audit()
    assert [r.action for r in records] == ["killswitch.engage"] and verify(records).ok


async def test_a_read_of_the_chain_right_after_an_engage_shows_its_record(
        store: SqlStore, store_url: str) -> None:
    """Read your writes: an engage's record left pending is linked by the next read."""
    for n, read in enumerate((lambda: store.list_audit(), lambda: store.find_audit(["global"]))):
        freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "zoë", T0, id=f"f-{n}")
        if store_url.startswith("sqlite"):
            await store.engage(freeze)
        else:
            async with store._hot_path().transaction((WRITE_LOCK,)):
                assert (await store.engage(freeze)).audit_pending
        records = await read()
        assert [r.action for r in records][-1:] == ["killswitch.engage"]
        await store.release(FreezeScope.GLOBAL, None, "bob", "over", T0)
    assert verify(await store.list_audit()).ok


async def test_warming_the_engage_up_leaves_no_trace(store: SqlStore) -> None:
    """A start warms the engage (PostgreSQL: one call rolled back): no freeze, no
    generation, no audit record, pending or chained; the engages after it are whole."""
    generation = await store.killswitch_generation()
    await store.warm_engage()
    await store.warm_engage()
    assert (await store.killswitch_generation(), await store.active_freezes()) == (generation, [])
    assert await store.list_audit() == [] and await store.chain_pending_audit() == 0
    freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "zoë", T0, id="f-1")
    change = await store.engage(freeze)
    assert (change.freeze, change.generation) == (freeze, generation + 1)
    await store.chain_pending_audit()
    assert [r.action for r in await store.list_audit()] == ["killswitch.engage"]


async def test_warming_up_does_not_wait_behind_the_arbiter(store: SqlStore,
                                                          store_url: str) -> None:
    """An intent batch (or another engage) holds the arbiter's lock: the warm-up gives up
    at once rather than hold the engage that comes after it."""
    if store_url.startswith("sqlite"):
        return  # nothing to warm up
    import asyncpg

    async with store._hot_path().transaction((ARBITER_LOCK,)):
        try:
            await store.warm_engage()
        except asyncpg.LockNotAvailableError:
            pass
        else:
            raise AssertionError("the warm-up waited for the arbiter's lock")
    freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "zoë", T0, id="f-1")
    assert (await store.engage(freeze)).freeze == freeze
