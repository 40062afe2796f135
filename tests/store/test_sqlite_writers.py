"""SQLite has one write lock for the whole database. The store's own writers in one
process (operators' calls, approvals, leases, plans) queue for it in order, so that
none starves while others take turns; only another process's writers are waited for
by trying again (``gateway.store.engine``)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from gateway.store import engine
from gateway.store.diagnose import store_errors, unavailable
from gateway.store.sql import SqlStore

pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


async def test_writers_of_one_process_take_turns_and_none_gives_up(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty writers at once, each holding the lock 30 ms: 0.6 s in all, twice the
    time a writer waits for another connection's lock (patched to 0.3 s). Trying again
    on a timer, the later ones gave up ("database is locked"); queued, each waits
    only for those ahead of it, and all commit."""
    monkeypatch.setattr(engine, "BUSY_TIMEOUT", 0.3)
    order: list[int] = []

    async def writer(n: int) -> None:
        async with store._writer.begin() as connection:
            await connection.execute(text(
                "UPDATE alembic_version SET version_num = version_num"))
            order.append(n)
            await asyncio.sleep(0.03)  # work done while holding the lock

    await asyncio.gather(*(writer(n) for n in range(20)))
    assert sorted(order) == list(range(20))


async def test_a_writer_whose_turn_does_not_come_gets_the_store_unavailable(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its wait is bounded (``WRITER_QUEUE``, patched to 0.2 s here); what it raises then
    is one of the errors the admin API answers with 503 ``store_unavailable``, and says
    why."""
    monkeypatch.setattr(engine, "WRITER_QUEUE", 0.2)
    store = SqlStore(store_url)
    await store.start()
    try:
        async with store._writer.begin() as holder:
            await holder.execute(text("UPDATE alembic_version SET version_num = version_num"))
            with pytest.raises(store_errors(store_url)) as raised:
                async with store._writer.begin():
                    pass
        why = unavailable(raised.value, store_url)
        assert why is not None and "timed out" in why
    finally:
        await store.close()
