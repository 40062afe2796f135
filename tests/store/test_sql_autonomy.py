"""Autonomy on every backend: delayed calls claimed once, shadow writes promoted once, the
journal's mode, and the autonomy report's counts added up by the database."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.core.approvals import ApprovalStatus, HeldCall, request_digest
from gateway.core.model import Checkpoint, JournalEntry, JournalQuery, JournalState
from gateway.core.report import DecisionCount, HeldFact, RolledBack
from gateway.store.sql import SqlStore

T0 = datetime(2026, 11, 2, 9, 30, 0, 500000, tzinfo=UTC)
EntryFactory = Callable[..., JournalEntry]


def held(n: int, **changes: Any) -> HeldCall:
    values: dict[str, Any] = dict(
        id=f"{n:032x}", at=T0 + timedelta(seconds=n), agent="bot", upstream="crm",
        method="DELETE", raw_path=f"/customers/{n}", query="", headers=(), body=b"",
        checkpoint=Checkpoint(), rule="delete-later", policy_revision="rev",
        digest=request_digest("DELETE", "crm", f"/customers/{n}", "", (), b""))
    values.update(changes)
    return HeldCall(**values)


def delayed(n: int, due: float, **changes: Any) -> HeldCall:
    return held(n, **{"due_at": T0 + timedelta(seconds=due), "extra": {"delay": due - n},
                      **changes})


async def test_mode_and_would_decide_round_trip_and_filter(store: SqlStore,
                                                           make_entry: EntryFactory) -> None:
    observed = make_entry(1, mode="observe", would_decide="deny")
    shadowed = make_entry(2, mode="shadow", would_decide="hold", decision="shadow",
                          state=JournalState.SHADOW, status=200, undo=None, reversible=False)
    plain = make_entry(3)
    for entry in (observed, shadowed, plain):
        await store.journal_intent(entry)
    assert await store.get_journal(observed.id) == observed
    assert await store.get_journal(shadowed.id) == shadowed
    assert (await store.get_journal(plain.id) or plain).mode is None
    assert await store.list_journal(JournalQuery(would_decide="deny")) == [observed]
    assert await store.list_journal(JournalQuery(state="shadow")) == [shadowed]


async def test_due_calls_are_found_in_due_order_and_claimed_exactly_once(
        store: SqlStore) -> None:
    for call in (delayed(1, 30), delayed(2, 10), delayed(3, 500), held(4)):
        await store.create_held(call)
    now = T0 + timedelta(seconds=60)
    assert [c.id for c in await store.due_held(now)] == [f"{2:032x}", f"{1:032x}"]
    assert (await store.get_held(f"{2:032x}") or held(0)).due_at == T0 + timedelta(seconds=10)
    lease = now + timedelta(seconds=30)
    wins = await asyncio.gather(*(store.claim_due(f"{2:032x}", "gateway", now, lease)
                                  for _ in range(8)))
    assert wins.count(True) == 1
    claimed = await store.get_held(f"{2:032x}")
    assert claimed is not None and (claimed.status, claimed.decided_by) == (
        ApprovalStatus.APPROVED, "gateway")
    assert not await store.claim_due(f"{3:032x}", "gateway", now, lease)  # not due yet
    assert not await store.claim_due(f"{4:032x}", "gateway", now, lease)  # a plain hold
    assert await store.reject_held(f"{1:032x}", "alice", "no", now)
    assert not await store.claim_due(f"{1:032x}", "gateway", now, lease)  # rejected first
    assert await store.due_held(now) == []


async def test_a_suspended_delayed_call_is_an_ordinary_held_call(store: SqlStore) -> None:
    await store.create_held(delayed(1, 5))
    extra = {"delay": 4, "delay_frozen": {"at": "x"}}
    assert await store.suspend_due(f"{1:032x}", extra, "approval.delay_frozen")
    assert not await store.suspend_due(f"{1:032x}", extra, "approval.delay_frozen")  # once
    records = [r for r in await store.list_audit() if r.action == "approval.delay_frozen"]
    assert [r.detail["approval"] for r in records] == [f"{1:032x}"]  # with it, once
    got = await store.get_held(f"{1:032x}")
    assert got is not None and (got.status, got.due_at, got.extra) == (
        ApprovalStatus.PENDING, None, extra)
    later = T0 + timedelta(days=1)
    assert await store.due_held(later) == []
    assert not await store.claim_due(f"{1:032x}", "gateway", later, later)


async def test_a_shadow_write_is_promoted_once_and_is_not_in_the_queue_before(
        store: SqlStore) -> None:
    kept = held(1, status=ApprovalStatus.SHADOW, extra={"shadow": {"journal_id": "j"}})
    await store.create_held(kept)
    await store.create_held(held(2))
    assert [c.id for c in await store.list_held()] == [f"{2:032x}"]
    assert await store.list_held("shadow") == [kept]
    assert await store.count_held("pending") == 1
    at, expires = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    extra = {"shadow": {"journal_id": "j", "promoted_by": "alice"}}
    wins = await asyncio.gather(*(store.promote_shadow(kept.id, at, expires, extra)
                                  for _ in range(5)))
    assert wins.count(True) == 1
    assert await store.get_held(kept.id) == dataclasses.replace(
        kept, status=ApprovalStatus.PENDING, at=at, expires_at=expires, extra=extra)
    assert not await store.promote_shadow(f"{2:032x}", at, None, extra)  # not a shadow write


async def test_decisions_are_counted_from_the_audit_chain_in_the_window(
        store: SqlStore) -> None:
    inside, outside = T0 + timedelta(hours=1), T0 - timedelta(days=1)
    records = [
        ("bot", "call.allow", {"upstream": "crm", "rule": "edit", "status": 200}, inside),
        ("bot", "call.allow", {"upstream": "crm", "rule": "edit", "status": 200}, inside),
        ("bot", "call.allow", {"upstream": "crm", "rule": "no-deletes", "mode": "observe",
                               "would_decide": "deny"}, inside),
        ("bot", "call.hold", {"upstream": "crm", "rule": "later", "delay": 300}, inside),
        ("bot", "call.hold", {"upstream": "crm", "rule": "big"}, inside),
        ("bot", "call.deny", {"upstream": "crm", "rule": None}, inside),
        ("other", "call.shadow", {"upstream": "pay", "rule": "edit",
                                  "would_decide": "allow"}, inside),
        ("bot", "call.deny", {"code": "unauthenticated"}, inside),  # before any rule
        ("bot", "call.allow", {"upstream": "crm", "rule": "edit"}, outside),
        ("alice", "approval.approve", {"upstream": "crm", "rule": "big"}, inside),
    ]
    await store.append_audit_many(records)
    counts = await store.decision_counts(T0, T0 + timedelta(days=1))
    assert sorted(counts, key=repr) == sorted([
        DecisionCount("crm", "edit", "bot", "allow", None, 2),
        DecisionCount("crm", "no-deletes", "bot", "allow", "deny", 1),
        DecisionCount("crm", "later", "bot", "delay", None, 1),
        DecisionCount("crm", "big", "bot", "hold", None, 1),
        DecisionCount("crm", None, "bot", "deny", None, 1),
        DecisionCount("pay", "edit", "other", "shadow", "allow", 1)], key=repr)
    only_pay = await store.decision_counts(T0, T0 + timedelta(days=1), upstream="pay")
    assert only_pay == [DecisionCount("pay", "edit", "other", "shadow", "allow", 1)]
    last = await store.last_audit("call.deny")
    assert last is not None and last.detail == {"code": "unauthenticated"}
    assert await store.last_audit("drill.report") is None


async def test_held_facts_and_rolled_back_writes_of_the_window(
        store: SqlStore, make_entry: EntryFactory) -> None:
    decided = T0 + timedelta(seconds=90)
    await store.create_held(held(1, rule="big", status=ApprovalStatus.EXECUTED,
                                 decided_by="alice", decided_at=decided))
    await store.create_held(delayed(2, 60, extra={"delay": 58, "delay_frozen": {"at": "x"}}))
    await store.create_held(held(3, status=ApprovalStatus.SHADOW, extra={"shadow": {}}))
    await store.create_held(held(4, at=T0 - timedelta(days=2)))
    facts = await store.held_facts(T0, T0 + timedelta(days=1))
    assert sorted(facts, key=lambda f: f.at) == [
        HeldFact("crm", "big", "bot", "hold", "executed", T0 + timedelta(seconds=1), decided,
                 "alice"),
        HeldFact("crm", "delete-later", "bot", "delay", "pending", T0 + timedelta(seconds=2),
                 None, None, frozen_at_due=True)]
    for n, state, decision in ((1, JournalState.ROLLED_BACK, "allow"),
                               (2, JournalState.ROLLED_BACK, "allow"),
                               (3, JournalState.COMPLETED, "allow"),
                               (4, JournalState.ROLLED_BACK, "rollback")):
        await store.journal_intent(make_entry(n, state=state, decision=decision))
    year = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))  # make_entry's
    assert await store.rolled_back_counts(*year) == [
        RolledBack("crm", "edit-customer", "support-bot", 2)]
    assert await store.rolled_back_counts(*year, upstream="pay") == []
    assert await store.rolled_back_counts(T0, T0 + timedelta(days=1)) == []
