"""A write's outcome is journaled after its answer (``Journal.later``): submitted to a
group commit and saved a batch at a time; an outcome whose batch the store fails is
saved on its own and retried; waiting for them (``settled``) never cancels one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.core.model import JournalEntry, JournalOutcome
from gateway.observe.seam import NO_WATCH
from gateway.services.journal import Journal
from gateway.settings import Settings
from tests.services.test_finishes import OUTCOME
from tests.store.conftest import _entry as make_entry


class Store:
    """The outcome side of a ``JournalStore``: ``gate`` holds each batch until set;
    ``down`` batches (and that many single saves) fail as a store that is down."""

    def __init__(self, down: int = 0) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.gates: list[asyncio.Event] = []  # one per batch, first: before ``gate``
        self.arrived = asyncio.Event()  # a batch is under way
        self.down = down
        self.batches: list[list[str]] = []
        self.saved: list[str] = []

    async def journal_outcomes(self, outcomes: list[tuple[str, JournalOutcome]]) -> list[bool]:
        self.batches.append([entry_id for entry_id, _ in outcomes])
        self.arrived.set()
        await (self.gates.pop(0) if self.gates else self.gate).wait()
        if self.down:
            raise ConnectionRefusedError("the store is down")
        self.saved += [entry_id for entry_id, _ in outcomes]
        return [not entry_id.endswith("-gone") for entry_id, _ in outcomes]

    async def journal_outcome(self, entry_id: str, outcome: JournalOutcome) -> None:
        if self.down:
            self.down -= 1
            raise ConnectionRefusedError("the store is down")
        self.saved.append(entry_id)


def journal(store: Store) -> Journal:
    return Journal(Settings(), store, None)  # type: ignore[arg-type]  # outcomes only


def answered(journal: Journal, *entries: JournalEntry) -> None:
    for entry in entries:
        journal.pending.add(entry.id)
        journal.later(entry, OUTCOME, NO_WATCH)


async def test_outcomes_that_come_while_a_batch_is_saved_go_in_the_next() -> None:
    store = Store()
    store.gate.clear()
    log = journal(store)
    first, second, third = (make_entry(n) for n in (1, 2, 3))
    answered(log, first)
    async with asyncio.timeout(10):
        await store.arrived.wait()  # the first batch is under way
    answered(log, second, third)
    store.gate.set()
    await log.settled()
    assert store.batches == [[first.id], [second.id, third.id]]
    assert store.saved == [first.id, second.id, third.id] and log.pending == set()


async def test_a_batch_the_store_fails_is_saved_outcome_by_outcome_and_retried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_pause)  # save_outcome's pauses between tries
    store = Store(down=3)  # the batches, then the first three single saves, fail
    log = journal(store)
    entries = [make_entry(n) for n in (1, 2)]
    answered(log, *entries)
    await log.settled()
    assert store.batches == [[e.id for e in entries]] + [[e.id] for e in entries]
    assert store.down == 0  # each outcome saved on its own was retried
    assert sorted(store.saved) == sorted(e.id for e in entries) and log.pending == set()


async def test_an_outcome_without_its_intent_is_logged_and_let_go(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    log = journal(store)
    gone = make_entry(1, id="x-gone")
    answered(log, gone)
    await log.settled()
    assert log.pending == set() and "no intent for the outcome of x-gone" in caplog.text


async def test_a_reader_that_stops_waiting_cancels_no_save() -> None:
    store = Store()
    store.gate.clear()
    log = journal(store)
    entry = make_entry(1)
    answered(log, entry)
    async with asyncio.timeout(10):
        await store.arrived.wait()
    reader = asyncio.create_task(log.settled())  # an admin read waiting for its writes
    await asyncio.wait([reader], timeout=0)  # it is waiting
    reader.cancel()  # its client went away
    with pytest.raises(asyncio.CancelledError):
        await reader
    store.gate.set()
    await log.settled()
    assert store.saved == [entry.id]


_real_sleep = asyncio.sleep


async def _no_pause(delay: float, *args: Any) -> Any:
    return await _real_sleep(0, *args)


async def test_a_reader_waits_for_the_outcomes_answered_before_it_asked_not_after() -> None:
    """Read your writes: an admin read waits for the outcomes of the writes answered
    before it, not for every one that comes while it waits, or a stream of writes (an
    agent at work) holds the read up until the stream stops (the drill's operator
    watching the journal saw nothing until the agent was done)."""
    store = Store()
    first_batch, second_batch = asyncio.Event(), asyncio.Event()
    store.gates = [first_batch, second_batch]
    log = journal(store)
    before, after = make_entry(1), make_entry(2)
    answered(log, before)
    async with asyncio.timeout(10):
        await store.arrived.wait()
    reader = asyncio.create_task(log.settled())
    await asyncio.wait([reader], timeout=0)  # it runs up to its wait for ``before``
    assert not reader.done()
    answered(log, after)  # answered while the reader waits
    first_batch.set()
    async with asyncio.timeout(10):
        await reader  # once ``before`` is saved, with ``after``'s batch still under way
    assert store.saved == [before.id] and store.batches == [[before.id], [after.id]]
    second_batch.set()
    await log.settled()
    assert store.saved == [before.id, after.id]


async def test_a_saving_task_cancelled_lets_its_readers_go() -> None:
    """At a stop the saving task may be cancelled mid-batch: whoever waits for it is let
    go; what it had not saved stays pending (an intent in the store: recovery journals
    it unknown at the next start), and a later outcome is saved by a new task."""
    store = Store()
    held = asyncio.Event()
    store.gates = [held]
    log = journal(store)
    cut, queued, last = make_entry(1), make_entry(2), make_entry(3)
    answered(log, cut)
    async with asyncio.timeout(10):
        await store.arrived.wait()
    answered(log, queued)
    reader = asyncio.create_task(log.settled())
    await asyncio.wait([reader], timeout=0)
    assert log._batches._draining is not None
    log._batches._draining.cancel()
    async with asyncio.timeout(10):
        await reader  # let go, not left waiting for a task that is gone
    answered(log, last)
    await log.settled()
    assert store.saved == [last.id] and log.pending == {cut.id, queued.id}
