"""SQLite: intents are flushed to disk before ``journal_intent`` returns, and
concurrent intents share one flush (group commit). The flush is watched at
``os.fdatasync``, which still runs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.model import JournalOutcome, JournalQuery
from gateway.store import hot_sqlite as hot_module
from gateway.store.sql import SqlStore
from tests.store.conftest import EntryFactory


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files ``fdatasync`` was called on, in order."""
    seen: list[str] = []
    real = os.fdatasync

    def watched(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(hot_module.os, "fdatasync", watched)
    return seen


async def started(tmp_path: Path, fsync: bool = True) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", fsync=fsync)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    async for store in started(tmp_path):
        yield store


async def test_concurrent_intents_share_one_flush_of_the_wal(
        store: SqlStore, make_entry: EntryFactory, synced: list[str], tmp_path: Path) -> None:
    entries = [make_entry(n) for n in range(32)]
    assert await asyncio.gather(*(store.journal_intent(e) for e in entries)) == [True] * 32
    assert synced == [str(tmp_path / "gateway.db-wal")]
    assert {e.id for e in entries} <= {e.id for e in await store.list_journal(
        JournalQuery(limit=100))}


async def test_each_intent_alone_is_flushed_before_it_returns(
        store: SqlStore, make_entry: EntryFactory, synced: list[str]) -> None:
    for n in range(3):
        await store.journal_intent(make_entry(n))
        assert len(synced) == n + 1
    await store.journal_intent(make_entry(9), unless_frozen=False)  # an operator's write
    assert len(synced) == 4


async def test_outcomes_do_not_wait_for_the_disk(
        store: SqlStore, make_entry: EntryFactory, synced: list[str], outcome: JournalOutcome) -> None:
    await store.journal_intent(make_entry(1))
    await store.journal_outcome(make_entry(1).id, outcome)
    assert len(synced) == 1  # the intent's flush only


async def test_fsync_off_never_flushes(tmp_path: Path, make_entry: EntryFactory,
                                       synced: list[str]) -> None:
    async for store in started(tmp_path, fsync=False):
        assert await store.journal_intent(make_entry(1))
        assert await store.get_journal(make_entry(1).id) is not None
    assert synced == []
