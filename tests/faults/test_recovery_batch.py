"""Suspected in issue 16, confirmed: a batch of intents whose commit was reported failed
although it had committed (a connection lost after COMMIT) was retried item by item;
each retry met its own row (duplicate id) and failed, so the agent was told 503 and the
write not sent, while its intent stayed in the journal: an orphan ``intent``. Now a
retry that finds its row already journaled counts as journaled.

Narrow: a real store on SQLite and PostgreSQL and its real group commit; only the
report of the batch's commit is faked (it commits, then raises as a lost connection
would). A caller's own duplicate still raises (tests/store/test_sql_journal.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.core.model import JournalEntry, JournalQuery
from gateway.store.sql import SqlStore
from tests.store.conftest import _entry


async def test_a_batch_committed_but_reported_failed_leaves_no_orphan_intent(
        store: SqlStore) -> None:
    real = store._insert_intents
    lost: list[int] = []

    async def committed_then_lost(entries: list[JournalEntry]) -> list[Any]:
        results = await real(entries)
        if len(entries) > 1 and not lost:
            lost.append(len(entries))
            raise ConnectionResetError("connection lost after COMMIT")
        return results

    store._insert_intents = committed_then_lost  # type: ignore[method-assign]
    entries = [_entry(n, id=f"{n:032x}") for n in range(1, 4)]
    results = await asyncio.gather(*(store.journal_intent(e) for e in entries),
                                   return_exceptions=True)
    assert lost == [3]  # the three went in one batch, reported lost
    journaled = await store.list_journal(JournalQuery(limit=10))
    assert len(journaled) == 3  # they were committed
    assert results == [True, True, True], results  # and their callers are told so
