"""Kill-switch freezes on every backend: one active per scope and target, audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.core.audit import verify
from gateway.core.model import Freeze, FreezeScope
from gateway.store import SqlStore

T0 = datetime(2024, 5, 1, 9, 30, 0, 654321, tzinfo=UTC)
GLOBAL, UPSTREAM, AGENT = FreezeScope.GLOBAL, FreezeScope.UPSTREAM, FreezeScope.AGENT


def freeze(scope: FreezeScope, target: str | None, n: int = 0, reason: str = "incident") -> Freeze:
    return Freeze(scope, target, reason, "alice", T0 + timedelta(seconds=n), id=f"f{n}")


async def test_engage_persists_and_audits(store: SqlStore) -> None:
    engaged = freeze(UPSTREAM, "crm", reason="refunds look wrong ✋")
    assert await store.engage_freeze(engaged) == engaged
    assert await store.active_freezes() == [engaged]

    [record] = await store.list_audit()
    assert (record.actor, record.action, record.at) == ("alice", "killswitch.engage", T0)
    assert record.detail == {"scope": "upstream", "target": "crm",
                             "reason": "refunds look wrong ✋"}


async def test_engaging_an_active_scope_again_changes_nothing(store: SqlStore) -> None:
    first = freeze(GLOBAL, None, 1)
    await store.engage_freeze(first)
    assert await store.engage_freeze(freeze(GLOBAL, None, 2, reason="again")) == first
    assert await store.active_freezes() == [first]
    assert len(await store.list_audit()) == 1


async def test_scopes_and_targets_are_independent(store: SqlStore) -> None:
    freezes = [freeze(GLOBAL, None, 0), freeze(UPSTREAM, "crm", 1),
               freeze(UPSTREAM, "billing", 2), freeze(AGENT, "crm", 3)]
    for each in freezes:
        await store.engage_freeze(each)
    assert await store.active_freezes() == freezes


async def test_release_then_engage_again(store: SqlStore) -> None:
    first = freeze(AGENT, "support-bot", 1)
    other = freeze(UPSTREAM, "crm", 2)
    await store.engage_freeze(first)
    await store.engage_freeze(other)

    released = await store.release_freeze(AGENT, "support-bot", "bob", "fixed", T0)
    assert released == first
    assert await store.active_freezes() == [other]
    assert await store.release_freeze(AGENT, "support-bot", "bob", "twice", T0) is None
    assert await store.release_freeze(GLOBAL, None, "bob", "never engaged", T0) is None

    again = freeze(AGENT, "support-bot", 3)
    assert await store.engage_freeze(again) == again
    assert await store.active_freezes() == [other, again]

    records = await store.list_audit()
    assert [r.action for r in records] == ["killswitch.engage", "killswitch.engage",
                                           "killswitch.release", "killswitch.engage"]
    assert (records[2].actor, records[2].detail) == (
        "bob", {"scope": "agent", "target": "support-bot", "reason": "fixed"})
    assert verify(records).ok


async def test_concurrent_engages_leave_one_freeze(store: SqlStore) -> None:
    results = await asyncio.gather(*(store.engage_freeze(freeze(GLOBAL, None, n))
                                     for n in range(10)))
    active = await store.active_freezes()
    assert len(active) == 1 and set(results) == set(active)
    assert len(await store.list_audit()) == 1


async def test_two_stores_on_one_database_share_the_freeze(store: SqlStore,
                                                           store_url: str) -> None:
    other = SqlStore(store_url)
    await other.start()
    try:
        results = await asyncio.gather(*(s.engage_freeze(freeze(UPSTREAM, "crm", n))
                                         for n, s in enumerate([store, other] * 4)))
        assert len(set(results)) == 1
        assert await other.active_freezes() == await store.active_freezes() == [results[0]]
        await other.release_freeze(UPSTREAM, "crm", "bob", "done", T0)
        assert await store.active_freezes() == []
    finally:
        await other.close()
