"""SQLite: intents are flushed to disk before ``journal_intent`` returns, and
concurrent intents share one flush (group commit). The flush is watched at
``os.fdatasync``, which still runs."""

from __future__ import annotations

import asyncio
import os
import threading
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


async def test_a_flush_that_fails_fails_its_intents(
        store: SqlStore, make_entry: EntryFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's error reaches every caller whose intent the flush was for (a pipe
    has no fsync: EINVAL)."""
    read_end, write_end = os.pipe()
    monkeypatch.setattr(hot_module.os, "fdatasync", lambda fd: os.fsync(read_end))
    try:
        results = await asyncio.gather(*(store.journal_intent(make_entry(n)) for n in range(3)),
                                       return_exceptions=True)
        assert [type(r) for r in results] == [OSError] * 3, results
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_after_a_failed_flush_no_intent_is_journaled_until_a_restart(
        tmp_path: Path, make_entry: EntryFactory, synced: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch committed and its flush failed; the disk answers again. A later flush
    that succeeds does not prove those rows are on disk (Linux may have dropped the
    pages whose writeback failed, and reports that once), so every intent fails, the
    batch's as they are retried alone and new ones, and the store's probe fails too,
    until the store is opened again and reads what the file holds."""
    read_end, write_end = os.pipe()
    real, failed = hot_module.os.fdatasync, []  # the synced fixture's watcher

    def fails_once(fd: int) -> None:
        if not failed:
            failed.append(fd)
            os.fsync(read_end)  # EINVAL: a pipe has no fsync
        real(fd)

    monkeypatch.setattr(hot_module.os, "fdatasync", fails_once)
    try:
        async for store in started(tmp_path):
            results = await asyncio.gather(*(store.journal_intent(make_entry(n))
                                             for n in range(3)), return_exceptions=True)
            assert [type(r) for r in results] == [OSError] * 3, results
            with pytest.raises(OSError, match="earlier flush"):
                await store.journal_intent(make_entry(7))
            with pytest.raises(OSError, match="earlier flush"):
                await store._hot_path().probe()
            assert synced == []  # no flush was trusted, none was asked for
        async for store in started(tmp_path):  # restarted: flushes are trusted again
            assert await store.journal_intent(make_entry(8))
            assert synced == [str(tmp_path / "gateway.db-wal")]
    finally:
        os.close(read_end)
        os.close(write_end)
    assert failed


async def test_fast_flushes_run_on_the_loop_slow_ones_on_a_thread(
        store: SqlStore, make_entry: EntryFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush faster than ``INLINE_FLUSH`` (moving average) runs on the loop's thread:
    the hand-off cost more than the disk. A slow disk moves the flushes to a worker
    thread, so the loop is not held for them, and a fast one brings them back."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    slow = [False]
    now = [0.0]  # the clock ``hot_sqlite`` times its flushes by: a slow disk advances it
    real = os.fdatasync

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return now[0]

    def timed(fd: int) -> None:
        threads.append(threading.get_ident())
        real(fd)
        if slow[0]:  # a slow disk: the flush takes three times the limit
            now[0] += 3 * hot_module.INLINE_FLUSH

    monkeypatch.setattr(hot_module, "time", Clock)
    monkeypatch.setattr(hot_module.os, "fdatasync", timed)
    await store.journal_intent(make_entry(0))
    assert threads == [loop_thread]

    slow[0] = True
    for n in range(1, 13):
        await store.journal_intent(make_entry(n))
    moved = [t != loop_thread for t in threads]
    assert moved[1:5] == [False] * 4, moved  # the average passes the limit after four
    assert all(moved[5:]), moved  # and the slow flushes stay on a thread

    slow[0] = False
    for n in range(13, 40):
        await store.journal_intent(make_entry(n))
    assert threads[-1] == loop_thread  # the disk is fast again
