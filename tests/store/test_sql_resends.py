"""A held call whose waiting agent left unanswered, and the resend that rejoins it: on
every backend, once, across processes, and only while the call can still answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from gateway.core.approvals import ApprovalStatus
from gateway.core.audit import verify
from gateway.store.sql import SqlStore
from tests.store.test_sql_approvals import T0, held

LEFT = T0 + timedelta(seconds=30)


async def test_the_resend_of_a_call_its_agent_left_rejoins_it_once(store: SqlStore) -> None:
    call = held(1)
    await store.create_held(call)
    assert await store.rejoin_held("key", call.agent, T0) is None  # not left: a new call
    assert await store.leave_held(call.id, "key", LEFT, ("support-bot", "approval.agent_left",
                                                         {"approval": call.id}, LEFT))
    assert await store.rejoin_held("other", call.agent, T0) is None  # another request
    assert await store.rejoin_held("key", call.agent, LEFT + timedelta(seconds=1)) is None
    assert await store.rejoin_held("key", call.agent, T0) == call  # the resend
    assert await store.rejoin_held("key", call.agent, T0) is None  # once
    records = await store.list_audit()
    assert [(r.actor, r.action, r.detail["approval"]) for r in records] == [
        ("support-bot", "approval.agent_left", call.id),
        ("support-bot", "approval.rejoined", call.id)]
    assert records[1].detail["path"] == call.raw_path and verify(records).ok


REJOINABLE = {ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.EXECUTED,
              ApprovalStatus.REJECTED}


@pytest.mark.parametrize("status", list(ApprovalStatus))
async def test_only_a_call_that_can_still_answer_is_rejoined(store: SqlStore,
                                                             status: ApprovalStatus) -> None:
    """An expired, failed or unknown call is past answering: its resend is a new call."""
    call = held(2, status=status)
    await store.create_held(call)
    assert await store.leave_held(call.id, "key", LEFT) is (status in REJOINABLE)
    rejoined = await store.rejoin_held("key", call.agent, T0)
    assert (rejoined == call) if status in REJOINABLE else rejoined is None


async def test_a_call_left_then_expired_is_not_rejoined(store: SqlStore) -> None:
    call = held(3, expires_at=T0 + timedelta(minutes=1))
    await store.create_held(call)
    assert await store.leave_held(call.id, "key", LEFT)
    assert await store.expire_held(T0 + timedelta(minutes=2)) == [call.id]
    assert await store.rejoin_held("key", call.agent, T0) is None


async def test_resends_racing_in_two_processes_rejoin_once(store: SqlStore,
                                                           store_url: str) -> None:
    other = SqlStore(store_url)
    await other.start()
    try:
        for n in range(3):
            call = held(10 + n)
            await store.create_held(call)
            assert await store.leave_held(call.id, f"key-{n}", LEFT)
            found = await asyncio.gather(*(
                (store, other)[i % 2].rejoin_held(f"key-{n}", call.agent, T0)
                for i in range(10)))
            assert [f for f in found if f is not None] == [call]
    finally:
        await other.close()
    assert [r.action for r in await store.list_audit()].count("approval.rejoined") == 3
