"""Held calls on every backend: exact round-trips, queries, and exactly-once state changes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.core.approvals import ApprovalStatus, HeldCall, Vote, request_digest
from gateway.core.audit import verify
from gateway.core.model import AuditItem, Checkpoint, JournalEntry
from gateway.store.sql import SqlStore

T0 = datetime(2024, 5, 2, 8, 15, 0, 250001, tzinfo=UTC)
PENDING, APPROVED = ApprovalStatus.PENDING, ApprovalStatus.APPROVED
ALICE = Vote("alice", "approver", T0 + timedelta(seconds=5), "looks right ✓")
BOB = Vote("bob", "admin", T0 + timedelta(seconds=6))
CAROL = Vote("carol", "approver", T0 + timedelta(seconds=7), "")


def held(n: int = 0, **changes: Any) -> HeldCall:
    """Call ``n``, ``n`` seconds after T0, id ``n`` in hex."""
    body = b'{"amount": 12000, "note": "r\xc3\xa9sum\xc3\xa9"}\x00\xff\x00tail'
    headers = (("content-type", "application/json"), ("x-note", "Zoë 🚀"), ("x-dup", "1"),
               ("x-dup", "2"))
    values: dict[str, Any] = dict(
        id=f"{n:032x}", at=T0 + timedelta(seconds=n), agent="support-bot", upstream="billing",
        method="POST", raw_path="/refunds/%C3%A9", query="a=1&b=%20", headers=headers,
        body=body, checkpoint=Checkpoint("run-7", "m-2", "p4", "t1"), rule="big-refund",
        policy_revision="rev-9", digest=request_digest("POST", "billing", "/refunds/%C3%A9",
                                                       "a=1&b=%20", headers, body),
        required=2, roles=("approver", "admin"), operators=("alice", "bob", "carol"),
        expires_at=T0 + timedelta(days=1),
    )
    values.update(changes)
    return HeldCall(**values)


async def test_every_field_round_trips(store: SqlStore) -> None:
    call = held(
        1, status=ApprovalStatus.FAILED, votes=(ALICE, BOB), decided_by="bob",
        decided_at=T0 + timedelta(seconds=6), reason="ok by me", lease_until=T0 + timedelta(minutes=1),
        response={"status": 201, "headers": [["x", "ü"]], "body": None, "n": 1.5},
        journal_id="j" * 32, error="upstream said no", extra={"comment": "日本語", "k": [1, None]})
    await store.create_held(call)
    assert await store.get_held(call.id) == call
    assert await store.list_held() == [call]


async def test_absent_values_round_trip_as_none_and_empty(store: SqlStore) -> None:
    call = HeldCall(id="bare", at=T0, agent="a", upstream="u", method="DELETE", raw_path="",
                    query="", headers=(), body=b"", checkpoint=Checkpoint(), rule=None,
                    policy_revision="r", digest="d")
    await store.create_held(call)
    got = await store.get_held("bare")
    assert got == call
    assert got is not None and (got.roles, got.operators, got.expires_at, got.response) == (
        None, None, None, None)
    assert (got.body, got.headers, got.votes, got.extra) == (b"", (), (), {})
    empty = held(2, roles=(), operators=(), response={}, expires_at=None)
    await store.create_held(empty)
    assert await store.get_held(empty.id) == empty
    assert await store.get_held("missing") is None


async def test_a_duplicate_id_is_refused(store: SqlStore) -> None:
    await store.create_held(held(1))
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await store.create_held(held(1, agent="other"))
    assert (await store.get_held(held(1).id)) == held(1)


async def test_list_filters_order_and_limit(store: SqlStore) -> None:
    calls = [held(0), held(1, agent="billing-bot"), held(2, upstream="crm"),
             held(3, status=ApprovalStatus.REJECTED), held(4, at=held(3).at)]
    for call in calls:
        await store.create_held(call)

    async def ids(**query: Any) -> list[int]:
        return [int(c.id, 16) for c in await store.list_held(**query)]

    assert await ids() == [4, 3, 2, 1, 0]
    assert await ids(limit=2) == [4, 3]
    assert await ids(status="pending") == [4, 2, 1, 0]
    assert await ids(status="rejected") == [3]
    assert await ids(agent="billing-bot") == [1]
    assert await ids(upstream="crm") == [2]
    assert await ids(upstream="billing", agent="support-bot", status="pending", limit=2) == [4, 0]
    assert await ids(status="executed") == []


async def test_votes_are_compare_and_set(store: SqlStore) -> None:
    call = held(1)
    await store.create_held(call)
    assert await store.record_votes(call.id, (), (ALICE,))
    assert not await store.record_votes(call.id, (), (BOB,))  # stale: alice voted meanwhile
    assert not await store.record_votes("missing", (), (BOB,))
    assert await store.record_votes(call.id, (ALICE,), (ALICE, CAROL))
    got = await store.get_held(call.id)
    assert got is not None and got.votes == (ALICE, CAROL) and got.status is PENDING
    # Votes read back compare equal to the ones written, whatever their time zone.
    shifted = Vote(ALICE.by, ALICE.role, ALICE.at.astimezone(timezone(timedelta(hours=2))),
                   ALICE.comment)
    assert await store.record_votes(call.id, (shifted, CAROL), (ALICE, CAROL, BOB))


async def test_a_decided_call_takes_no_votes(store: SqlStore) -> None:
    await store.create_held(held(1, status=ApprovalStatus.REJECTED))
    assert not await store.record_votes(held(1).id, (), (ALICE,))


def _claim(store: SqlStore, call: HeldCall, by: str = "bob",
           before: tuple[Vote, ...] = (ALICE,)) -> Any:
    at = T0 + timedelta(seconds=10)
    return store.claim_held(call.id, before, (*before, BOB), by, at, at + timedelta(seconds=60))


async def test_claim_sets_the_decision(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    await store.create_held(call)
    assert await _claim(store, call)
    got = await store.get_held(call.id)
    assert got == dataclasses.replace(
        call, status=APPROVED, votes=(ALICE, BOB), decided_by="bob",
        decided_at=T0 + timedelta(seconds=10), lease_until=T0 + timedelta(seconds=70))
    assert not await _claim(store, call)  # already approved


async def test_claim_needs_the_votes_read(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    await store.create_held(call)
    assert not await _claim(store, call, before=())
    assert not await _claim(store, call, before=(CAROL,))
    assert (await store.get_held(call.id)) == call


async def test_an_expired_call_cannot_be_claimed_or_rejected(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,), expires_at=T0 + timedelta(seconds=10))  # == the claim's at
    await store.create_held(call)
    assert not await _claim(store, call)
    assert not await store.reject_held(call.id, "bob", "no", T0 + timedelta(seconds=10))
    assert await store.reject_held(call.id, "bob", "no", T0 + timedelta(seconds=9))


async def _race(claimants: list[SqlStore], call: HeldCall, n: int = 20) -> list[bool]:
    await claimants[0].create_held(call)
    return list(await asyncio.gather(
        *(_claim(claimants[i % len(claimants)], call, by=f"op-{i}") for i in range(n))))


async def test_concurrent_claims_on_one_store_have_one_winner(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    results = await _race([store], call)
    assert results.count(True) == 1
    got = await store.get_held(call.id)
    assert got is not None and got.status is APPROVED
    assert got.decided_by == f"op-{results.index(True)}"


async def test_concurrent_claims_on_two_stores_have_one_winner(store: SqlStore,
                                                               store_url: str) -> None:
    other = SqlStore(store_url)
    await other.start()
    try:
        for n in range(3):
            call = held(n, votes=(ALICE,))
            results = await _race([store, other], call)
            assert results.count(True) == 1
            got = await other.get_held(call.id)
            assert got is not None and got.status is APPROVED
            assert got.decided_by == f"op-{results.index(True)}"
    finally:
        await other.close()


async def test_reject_and_claim_race_has_one_winner(store: SqlStore, store_url: str) -> None:
    other = SqlStore(store_url)
    await other.start()
    try:
        for n in range(5):
            call = held(n, votes=(ALICE,))
            await store.create_held(call)
            rejections = [s.reject_held(call.id, "carol", "too big", T0) for s in (store, other)]
            results = await asyncio.gather(_claim(other, call), *rejections, _claim(store, call))
            assert results.count(True) == 1
            got = await store.get_held(call.id)
            assert got is not None
            assert got.status is (APPROVED if results[0] or results[-1]
                                  else ApprovalStatus.REJECTED)
    finally:
        await other.close()


async def test_release_returns_a_claim_to_pending(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    await store.create_held(call)
    assert not await store.release_claim(call.id)  # not claimed
    assert await _claim(store, call)
    assert await store.release_claim(call.id)
    assert not await store.release_claim(call.id)
    got = await store.get_held(call.id)
    assert got == dataclasses.replace(call, votes=(ALICE, BOB))
    at = T0 + timedelta(seconds=20)
    assert await store.claim_held(call.id, (ALICE, BOB), (ALICE, BOB), "alice", at, at)


async def test_release_can_take_back_the_vote_that_claimed(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    await store.create_held(call)
    assert await _claim(store, call)
    assert await store.release_claim(call.id, (ALICE,))  # Bob's vote sent nothing
    assert await store.get_held(call.id) == call


async def test_finish_only_from_approved(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    await store.create_held(call)
    response = {"status": 201, "headers": [["content-type", "application/json"]], "body": "{}"}
    assert not await store.finish_held(call.id, ApprovalStatus.EXECUTED, response, "j1", None)
    assert await _claim(store, call)
    assert await store.finish_held(call.id, ApprovalStatus.EXECUTED, response, "j1", None)
    assert not await store.finish_held(call.id, ApprovalStatus.FAILED, None, None, "again")
    got = await store.get_held(call.id)
    assert got is not None
    assert (got.status, got.response, got.journal_id, got.error, got.decided_by) == (
        ApprovalStatus.EXECUTED, response, "j1", None, "bob")

    second = held(2, votes=(ALICE,))
    await store.create_held(second)
    assert await _claim(store, second)
    assert await store.finish_held(second.id, ApprovalStatus.FAILED, None, "j2", "timed out")
    got = await store.get_held(second.id)
    assert got is not None and (got.status, got.response, got.error) == (
        ApprovalStatus.FAILED, None, "timed out")


@pytest.mark.parametrize("status", [ApprovalStatus.PENDING, ApprovalStatus.APPROVED,
                                    ApprovalStatus.REJECTED])
async def test_finish_refuses_other_statuses(store: SqlStore, status: ApprovalStatus) -> None:
    with pytest.raises(ValueError):
        await store.finish_held("x", status, None, None, None)


async def test_reject_only_from_pending(store: SqlStore) -> None:
    call = held(1, votes=(ALICE,))
    await store.create_held(call)
    assert await store.reject_held(call.id, "carol", "not this one", T0 + timedelta(seconds=3))
    assert not await store.reject_held(call.id, "bob", "again", T0 + timedelta(seconds=4))
    assert not await _claim(store, call)
    got = await store.get_held(call.id)
    assert got == dataclasses.replace(call, status=ApprovalStatus.REJECTED, decided_by="carol",
                                      decided_at=T0 + timedelta(seconds=3), reason="not this one")
    claimed = held(2, votes=(ALICE,))
    await store.create_held(claimed)
    assert await _claim(store, claimed)
    assert not await store.reject_held(claimed.id, "carol", None, T0)


async def _statuses(store: SqlStore) -> dict[int, ApprovalStatus]:
    return {int(c.id, 16): c.status for c in await store.list_held()}


@pytest.fixture(params=["returning", "select-then-update"])
def sweep_mode(request: pytest.FixtureRequest, store: SqlStore,
               monkeypatch: pytest.MonkeyPatch) -> str:
    """Sweeps run with UPDATE ... RETURNING and also as old SQLite would run them."""
    if request.param != "returning":
        monkeypatch.setattr(store._writer.dialect, "update_returning", False)
    return str(request.param)


async def test_expire_touches_only_due_pending_calls(store: SqlStore, sweep_mode: str) -> None:
    now = T0 + timedelta(hours=1)
    for call in [held(0, expires_at=now - timedelta(microseconds=1)),
                 held(1, expires_at=now),
                 held(2, expires_at=now + timedelta(microseconds=1)),
                 held(3, expires_at=None),
                 held(4, expires_at=now - timedelta(days=1), status=APPROVED, lease_until=now),
                 held(5, expires_at=now - timedelta(days=1), status=ApprovalStatus.REJECTED)]:
        await store.create_held(call)
    assert await store.expire_held(now) == [held(0).id, held(1).id]
    assert await store.expire_held(now) == []
    assert await _statuses(store) == {
        0: ApprovalStatus.EXPIRED, 1: ApprovalStatus.EXPIRED, 2: PENDING, 3: PENDING,
        4: APPROVED, 5: ApprovalStatus.REJECTED}
    assert await store.expire_held(now + timedelta(days=400)) == [held(2).id]


async def test_abandon_touches_only_lapsed_claims(store: SqlStore, sweep_mode: str) -> None:
    now = T0 + timedelta(hours=1)
    for call in [held(0, status=APPROVED, lease_until=now - timedelta(microseconds=1)),
                 held(1, status=APPROVED, lease_until=now),
                 held(2, status=APPROVED, lease_until=now + timedelta(seconds=1)),
                 held(3, lease_until=now - timedelta(days=1)),
                 held(4, status=ApprovalStatus.EXECUTED, lease_until=now - timedelta(days=1))]:
        await store.create_held(call)
    assert await store.abandon_lapsed_claims(now) == [held(0).id]
    assert await store.abandon_lapsed_claims(now) == []
    assert await _statuses(store) == {0: ApprovalStatus.UNKNOWN, 1: APPROVED, 2: APPROVED,
                                      3: PENDING, 4: ApprovalStatus.EXECUTED}
    lapsed = await store.get_held(held(0).id)
    assert lapsed is not None and lapsed.error and "never re-sent" in lapsed.error
    assert not await store.finish_held(held(0).id, ApprovalStatus.EXECUTED, None, None, None)


async def test_each_swept_call_is_recorded_with_its_change(store: SqlStore,
                                                            sweep_mode: str) -> None:
    """The sweeper's changes carry their records: a process that dies after the change
    cannot leave a call expired or unknown that the audit does not show."""
    now = T0 + timedelta(hours=1)
    for call in [held(0, expires_at=now), held(1, status=APPROVED, lease_until=T0),
                 held(2, expires_at=now), held(3)]:
        await store.create_held(call)
    await store.append_audit("alice", "approval.approve", {"approval": held(1).id}, T0)
    assert await store.expire_held(now) == [held(0).id, held(2).id]
    assert await store.abandon_lapsed_claims(now) == [held(1).id]
    records = await store.list_audit()
    assert [(r.actor, r.action, r.detail["approval"]) for r in records[1:]] == [
        ("gateway", "approval.expired", held(0).id), ("gateway", "approval.expired", held(2).id),
        ("gateway", "approval.unknown", held(1).id)]
    assert records[1].detail == {"approval": held(0).id, "agent": "support-bot",
                                 "upstream": "billing", "method": "POST",
                                 "path": "/refunds/%C3%A9", "rule": "big-refund"}
    assert verify(records).ok  # linked as every other record is, on both stores


async def test_a_sweep_whose_record_fails_changes_nothing(store: SqlStore,
                                                          sweep_mode: str) -> None:
    now = T0 + timedelta(hours=1)
    await store.create_held(held(0, expires_at=now))
    async with store._writer.begin() as connection:  # the audit refuses every insert
        for statement in REFUSE_AUDIT[connection.dialect.name]:
            await connection.exec_driver_sql(statement)
    try:
        with pytest.raises(Exception, match="refused"):
            await store.expire_held(now)
        assert await _statuses(store) == {0: PENDING}
    finally:
        async with store._writer.begin() as connection:
            await connection.exec_driver_sql("DROP TRIGGER refuse_audit" + (
                " ON audit" if connection.dialect.name == "postgresql" else ""))
    assert await store.expire_held(now) == [held(0).id]


Change = Callable[[SqlStore, AuditItem], Awaitable[Any]]
CHANGES: dict[str, tuple[int, Change]] = {  # the call each changes (as ``_made`` makes them)
    "approval.held": (9, lambda s, r: s.create_held(held(9), r)),
    "approval.vote": (0, lambda s, r: s.record_votes(held(0).id, (), (ALICE,), r)),
    "approval.approve": (0, lambda s, r: s.claim_held(held(0).id, (), (ALICE, BOB), "bob", T0,
                                                      T0 + timedelta(hours=1), r)),
    "approval.reject": (0, lambda s, r: s.reject_held(held(0).id, "bob", "no", T0, r)),
    "approval.vote_withdrawn": (1, lambda s, r: s.release_claim(held(1).id, (), r)),
    "approval.executed": (1, lambda s, r: s.finish_held(held(1).id, ApprovalStatus.EXECUTED,
                                                        None, None, None, record=r)),
    "approval.due": (2, lambda s, r: s.claim_due(held(2).id, "gateway",
                                                 T0 + timedelta(seconds=3),
                                                 T0 + timedelta(hours=1), r)),
    "shadow.promote": (3, lambda s, r: s.promote_shadow(held(3).id, T0, None, {}, r)),
    "approval.agent_left": (0, lambda s, r: s.leave_held(held(0).id, "key", T0, r)),
}
MADE = [held(0), held(1, status=APPROVED, lease_until=T0 + timedelta(hours=1)),
        held(2, due_at=T0 + timedelta(seconds=1)), held(3, status=ApprovalStatus.SHADOW)]


async def _calls(store: SqlStore) -> list[HeldCall | None]:
    return [await store.get_held(held(n).id) for n in (0, 1, 2, 3, 9)]


@pytest.mark.parametrize("action", sorted(CHANGES))
async def test_a_change_and_its_record_commit_together(store: SqlStore, action: str) -> None:
    """Every change of a held call takes its audit record into its own transaction."""
    for call in MADE:
        await store.create_held(call)
    n, change = CHANGES[action]
    assert await change(store, ("alice", action, {"approval": held(n).id}, T0)) in (True, None)
    records = await store.list_audit()
    assert [(r.action, r.detail) for r in records] == [(action, {"approval": held(n).id})]
    assert verify(records).ok


@pytest.mark.parametrize("action", sorted(CHANGES))
async def test_a_change_whose_record_fails_is_not_made(store: SqlStore, action: str) -> None:
    for call in MADE:
        await store.create_held(call)
    before = await _calls(store)
    async with store._writer.begin() as connection:
        for statement in REFUSE_AUDIT[connection.dialect.name]:
            await connection.exec_driver_sql(statement)
    n, change = CHANGES[action]
    with pytest.raises(Exception, match="refused"):
        await change(store, ("alice", action, {"approval": held(n).id}, T0))
    assert await _calls(store) == before and await store.list_audit() == []


REFUSE_AUDIT = {
    "sqlite": ["CREATE TRIGGER refuse_audit BEFORE INSERT ON audit "
               "BEGIN SELECT RAISE(ABORT, 'refused'); END"],
    "postgresql": ["CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql "
                   "AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
                   "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"],
}


async def test_restart_keeps_pending_calls(store_url: str) -> None:
    first = SqlStore(store_url)
    await first.start()
    calls = [held(0, votes=(ALICE,)), held(1)]
    for call in calls:
        await first.create_held(call)
    await first.close()

    second = SqlStore(store_url)
    await second.start()
    try:
        assert await second.list_held(status="pending") == calls[::-1]
        assert await _claim(second, calls[0])
    finally:
        await second.close()


@pytest.mark.parametrize("approval", [None, {}, {
    "id": "a1", "required": 2, "approvals": [ALICE.to_json(), BOB.to_json()],
    "digest": "ab" * 32, "note": "Zoë", "n": [1, 2.5, None, True]}])
async def test_the_journal_keeps_the_approval(store: SqlStore,
                                              make_entry: Callable[..., JournalEntry],
                                              approval: dict[str, Any] | None) -> None:
    entry = make_entry(1, approval=approval)
    await store.journal_intent(entry)
    got = await store.get_journal(entry.id)
    assert got == entry and got is not None and got.approval == approval


async def test_count_held_by_status(store: SqlStore) -> None:
    assert await store.count_held("pending") == 0
    for n in range(3):
        await store.create_held(held(n))
    assert await store.count_held("pending") == 3
    assert await store.count_held("executed") == 0
