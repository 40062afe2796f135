"""``Finishes``: the end of a claimed held call, saved while the claim is this
process's. A narrow unit test over a store that refuses the save until told (the
real failover is ``tests/e2e/test_failover_held.py``): the caller's wait is
bounded, the save goes on after it, and it stops at the claim's lease."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import app
from gateway.core.approvals import ApprovalStatus, HeldCall
from gateway.core.model import AuditItem, Checkpoint, JournalOutcome, JournalState, utcnow
from gateway.observe.seam import NO_WATCH
from gateway.services.finishes import Finishes
from gateway.services.notify import Notifier
from tests.harness import policy_text, started_gateway
from tests.store.conftest import _entry as make_entry

RESPONSE = {"status": 200, "headers": {}, "body": "{}", "body_encoding": None}


class Store:
    """One held call; ``finish_held`` fails (no primary) until ``up`` is set."""

    def __init__(self, held: HeldCall) -> None:
        self.held = held
        self.up = asyncio.Event()
        self.tries = 0
        self.audited: list[str] = []

    async def finish_held(self, call_id: str, status: ApprovalStatus,
                          response: dict[str, Any] | None, journal_id: str | None,
                          error: str | None, hidden: frozenset[str] = frozenset(),
                          record: AuditItem | None = None) -> bool:
        self.tries += 1
        if not self.up.is_set():
            raise ConnectionRefusedError("no primary among the store's hosts")
        if self.held.status is not ApprovalStatus.APPROVED:
            return False
        self.held = replace(self.held, status=status, response=response,
                            journal_id=journal_id, error=error)
        if record is not None:  # in the same transaction
            self.audited.append(record[1])
        return True

    async def get_held(self, call_id: str) -> HeldCall:
        return self.held


def claimed(lease: float) -> HeldCall:
    now = utcnow()
    return HeldCall(id="h-1", at=now, agent="bot", upstream="crm", method="PATCH",
                    raw_path="/customers/1", query="", headers=(), body=b"{}",
                    checkpoint=Checkpoint(), rule="held", policy_revision="r", digest="d",
                    status=ApprovalStatus.APPROVED, decided_by="alice", decided_at=now,
                    lease_until=now + timedelta(seconds=lease))


def finishes(store: Store, woken: list[str], wait: float) -> Finishes:
    return Finishes(store, Notifier(None),  # type: ignore[arg-type]
                    woken.append, wait=wait)


async def test_an_answer_the_store_refuses_is_saved_once_it_is_back() -> None:
    held = claimed(lease=60)
    store, woken = Store(held), []
    saving = finishes(store, woken, wait=0.05)
    answer = await saving(held, ApprovalStatus.EXECUTED, RESPONSE, "j-1", None)
    assert answer is None  # not saved within the caller's wait: 503 for the operator
    assert store.held.status is ApprovalStatus.APPROVED and store.audited == [] and not woken
    store.up.set()  # a primary again, well within the claim's lease
    await saving.settled(timeout=30)
    assert store.held.status is ApprovalStatus.EXECUTED and store.held.journal_id == "j-1"
    assert store.held.response == RESPONSE
    assert store.audited == ["approval.executed"] and woken == ["h-1"]
    assert store.tries >= 2


async def test_the_save_stops_when_the_claim_lease_ends() -> None:
    """Past the lease the sweeper calls the call unknown; an answer saved after that
    would overwrite what another process may have decided, so it is not tried."""
    held = claimed(lease=0.2)
    store, woken = Store(held), []
    saving = finishes(store, woken, wait=30)
    assert await saving(held, ApprovalStatus.EXECUTED, RESPONSE, "j-1", None) is None
    assert store.tries >= 2  # retried while the lease lasted, then left to the sweeper
    assert store.held.status is ApprovalStatus.APPROVED and store.audited == [] and not woken


async def test_a_store_that_answers_saves_at_once() -> None:
    held = claimed(lease=60)
    store, woken = Store(held), []
    store.up.set()
    final = await finishes(store, woken, wait=5)(held, ApprovalStatus.UNKNOWN, None, "j-1",
                                                 "upstream_timeout: ...")
    assert final is not None and final.status is ApprovalStatus.UNKNOWN
    assert store.tries == 1 and store.audited == ["approval.unknown"] and woken == ["h-1"]


async def test_a_stop_waits_for_answers_and_outcomes_under_one_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At shutdown an approved call's answer and a write's outcome may both be waiting
    for the store: the stop waits for them side by side, up to ``SAVES_AT_STOP`` in all,
    not that long for each in turn."""
    monkeypatch.setattr(app, "SAVES_AT_STOP", 1.5)
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    rules = '- id: r\n  match: {methods: [GET], path: "/r"}\n  action: allow\n'
    async with started_gateway(tmp_path, url, {"crm.yaml": policy_text("http://127.0.0.1:9",
                                                                       rules)}) as gw:
        gateway = gw.gateway
        monkeypatch.setattr(gateway.store, "finish_held", refused)
        monkeypatch.setattr(gateway.store, "journal_outcomes", refused)
        monkeypatch.setattr(gateway.store, "journal_outcome", refused)
        gateway.approvals.finishes.wait = 0  # the operator's request is answered at once
        assert await gateway.approvals.finishes(
            claimed(lease=60), ApprovalStatus.EXECUTED, RESPONSE, "j-1", None) is None
        gateway.journal.later(make_entry(1), OUTCOME, NO_WATCH)
        started = time.monotonic()
    took = time.monotonic() - started
    assert 1.5 <= took < 2.9, took  # each one's deadline in turn: 3 s and more


async def refused(*args: Any, **kwargs: Any) -> None:
    raise ConnectionRefusedError("no primary among the store's hosts")


OUTCOME = JournalOutcome(JournalState.COMPLETED, 200, {}, "{}", None, 2, None, False, None, {},
                         utcnow())
