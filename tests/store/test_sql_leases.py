"""Leases on every backend: one holder at a time, renewed by its holder, taken over
once lapsed; and tripwire windows counted in the store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway.core.approvals import ApprovalStatus
from gateway.core.model import utcnow
from gateway.store.sql import SqlStore
from tests.store.conftest import EntryFactory
from tests.store.test_sql_approvals import held


async def test_one_of_many_takers_holds_a_lease_until_it_lapses(store: SqlStore) -> None:
    now = utcnow()
    taken = await asyncio.gather(*(store.take_lease("plan:p", f"proc-{n}", now, 10)
                                   for n in range(8)))
    assert sum(taken) == 1
    holder = (await store.lease_holder("plan:p"))
    assert holder is not None and holder[0] == f"proc-{taken.index(True)}"
    assert await store.take_lease("plan:p", holder[0], now, 10)  # its holder renews it
    assert not await store.take_lease("plan:p", "other", now + timedelta(seconds=5), 10)
    later = now + timedelta(seconds=11)
    assert await store.lapsed_leases("plan:", later) == [("plan:p", holder[0])]
    assert await store.take_lease("plan:p", "other", later, 10)  # lapsed: taken over
    await store.release_lease("plan:p", holder[0])  # not the holder any more: nothing
    assert (await store.lease_holder("plan:p") or ("",))[0] == "other"
    await store.release_lease("plan:p", "other")
    assert await store.lease_holder("plan:p") is None


async def test_tripwire_windows_count_and_slide(store: SqlStore) -> None:
    now = utcnow()
    counts = [await store.count_tripwire("up/five/", 2.5, 60, now) for _ in range(3)]
    assert counts == [(0, 0.0), (1, 2.5), (2, 5.0)]  # before each event
    assert await store.count_tripwire("up/five/", 1, 60, now + timedelta(seconds=64)) == \
        (0, 0.0)  # a window and a bucket later: gone


async def test_a_held_calls_entry_is_accounted_for_by_the_record_of_its_end(
        store: SqlStore, make_entry: EntryFactory) -> None:
    """Recovery appends a "recovered" record for each entry ``unaudited`` returns. A held
    call's entry is named by the record that ends the call (the executor's, or the
    sweeper's ``approval.unknown`` when the claim lapsed with the answer unsaved), and is
    not missing one while the call is still claimed (that record is yet to come)."""
    calls = {n: held(n, status=status) for n, status in (
        (1, ApprovalStatus.APPROVED), (2, ApprovalStatus.UNKNOWN), (3, ApprovalStatus.UNKNOWN))}
    for n, call in calls.items():
        await store.create_held(call)
        await store.journal_intent(make_entry(n, approval={"id": call.id, "approved_by": []}))
    await store.journal_intent(make_entry(4))  # not held: named by its call's record only
    now = utcnow()
    await store.append_audit("gateway", "approval.unknown", {"approval": calls[2].id}, now)
    await store.append_audit("ops", "approval.approve", {"approval": calls[3].id}, now)
    assert [e.id for e in await store.unaudited(store.process)] == [
        make_entry(3).id, make_entry(4).id]
