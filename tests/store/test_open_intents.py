"""The intents still without outcome, as the kill switch and recovery read them, over
every path that journals or settles a write (both stores; on PostgreSQL they come
from ``journal_open``, kept by triggers, 0023)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import text

from gateway.core.killswitch import InFlight
from gateway.core.model import JournalOutcome
from gateway.store.migrate import alembic_config, upgrade
from gateway.store.sql import SqlStore
from tests.store.conftest import T0, EntryFactory

LATER = T0 + timedelta(hours=1)


def _open(store: SqlStore, *entries: object) -> list[InFlight]:
    return [InFlight(e.id, e.agent, e.upstream, e.method, e.path, store.process)  # type: ignore[attr-defined]
            for e in entries]


async def test_what_is_open_follows_intents_outcomes_and_recovery(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    alone, batched, riding, dead = (make_entry(n) for n in (1, 2, 3, 4))
    assert await store.journal_intent(alone)
    assert all(await asyncio.gather(*(store.journal_intent(e) for e in (batched, riding, dead))))
    assert await store.pending_intents(T0) == _open(store, alone, batched, riding, dead)
    assert await store.intent_processes(LATER) == [store.process]
    assert await store.stale_intents(store.process, make_entry(3).at) == [alone.id, batched.id]

    await store.journal_outcome(alone.id, outcome)  # alone
    # an outcome and an intent in one group commit (on PostgreSQL the outcome rides the
    # intents' call, gateway_journal_write)
    later = make_entry(5)
    await asyncio.gather(store.journal_outcome(batched.id, outcome), store.journal_intent(later))
    await store.abandon_intents([riding.id], "lost", LATER)
    assert await store.pending_intents(T0) == _open(store, dead, later)
    assert await store.pending_intents(make_entry(5).at) == _open(store, later)

    await store.journal_outcome(later.id, outcome)
    unknown, _ = await store.recover_process(store.process, LATER)
    assert unknown == [dead.id]
    assert await store.pending_intents(T0) == []
    assert await store.intent_processes(LATER) == []
    assert await store.stale_intents(store.process, LATER) == []


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_upgrading_to_0023_keeps_the_intents_already_open(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    first, second = make_entry(1), make_entry(2)
    assert all(await asyncio.gather(store.journal_intent(first), store.journal_intent(second)))
    async with store._engine.connect() as connection, connection.begin():
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0022"))
        tables = await connection.execute(text("SELECT to_regclass('journal_open')"))
        assert tables.scalar_one() is None
    await upgrade(store._engine)  # 0023 again: the two open intents are found
    assert [p.id for p in await store.pending_intents(T0)] == [first.id, second.id]
    assert await store.intent_processes(LATER) == [store.process]
    await store.journal_outcome(first.id, outcome)
    assert [p.id for p in await store.pending_intents(T0)] == [second.id]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_tidy_vacuums_the_rows_outcomes_left_in_journal_open(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    """Every outcome deletes its intent's row from ``journal_open``; autovacuum comes at
    most once a minute, so the engage's sequential scan read every dead row until then.
    A recovery round's ``tidy`` vacuums them (``pgstattuple`` counts what a scan reads)."""
    entries = [make_entry(n) for n in range(600)]
    assert all(await asyncio.gather(*(store.journal_intent(e) for e in entries)))
    await asyncio.gather(*(store.journal_outcome(e.id, outcome) for e in entries))
    assert await store.pending_intents(T0) == []

    async def dead() -> int:
        async with store._engine.begin() as connection:
            await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
            counted = await connection.execute(text(
                "SELECT dead_tuple_count FROM pgstattuple('journal_open')"))
            return int(counted.scalar_one())

    assert await dead() > 0  # those page pruning on the way has not removed yet
    await store.tidy()
    assert await dead() == 0
    second = make_entry(700)
    assert await store.journal_intent(second)  # the table works on after it
    assert [p.id for p in await store.pending_intents(T0)] == [second.id]


async def test_tidy_is_safe_on_every_store(store: SqlStore, make_entry: EntryFactory) -> None:
    first = make_entry(1)
    assert await store.journal_intent(first)
    await store.tidy()
    assert [p.id for p in await store.pending_intents(T0)] == [first.id]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_outcomes_rewrite_their_rows_in_place(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    """An outcome's row version is heap-only (HOT, 0024): on its intent's page, with no
    index entry of its own. Counted with ``pageinspect`` over every page of the journal:
    a HOT version has ``HEAP_ONLY_TUPLE`` (0x8000) in ``t_infomask2``."""
    entries = [make_entry(n) for n in range(200)]
    assert all(await asyncio.gather(*(store.journal_intent(e) for e in entries)))
    await asyncio.gather(*(store.journal_outcome(e.id, outcome) for e in entries))

    async with store._engine.begin() as connection:
        await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        counted = await connection.execute(text(
            "SELECT count(*) FILTER (WHERE t_infomask2 & 32768 <> 0) "
            "FROM generate_series(0, pg_relation_size('journal') / "
            "current_setting('block_size')::int - 1) AS page, "
            "heap_page_items(get_raw_page('journal', page::int)) WHERE lp_flags = 1"))
        heap_only = counted.scalar_one()
        states = await connection.execute(text("SELECT DISTINCT state FROM journal"))
    assert [s for (s,) in states] == [outcome.state.value]
    assert heap_only == len(entries)
