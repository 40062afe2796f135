"""The change journal on every backend: exact round-trips, queries, errors reaching the caller."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.core.model import (
    Checkpoint,
    JournalEntry,
    JournalOutcome,
    JournalQuery,
    JournalState,
    Undo,
)
from gateway.store.sql import SqlStore

EntryFactory = Callable[..., JournalEntry]


async def test_intent_then_outcome_round_trips_every_field(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    entry = make_entry(1)
    await store.journal_intent(entry)
    assert await store.get_journal(entry.id) == entry

    await store.journal_outcome(entry.id, outcome)
    expected = dataclasses.replace(
        entry, **{f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)})
    assert expected.state is JournalState.COMPLETED
    assert await store.get_journal(entry.id) == expected
    assert await store.list_journal(JournalQuery()) == [expected]


async def test_nullable_fields_round_trip_as_none(store: SqlStore,
                                                  make_entry: EntryFactory) -> None:
    entry = make_entry(
        2, checkpoint=Checkpoint(), rule=None, request_body=None, request_body_sha256=None,
        request_content_type=None, prior=None, prior_status=None, capture_path=None,
        undo=None, reversible=False, request_headers={}, query="")
    await store.journal_intent(entry)
    assert await store.get_journal(entry.id) == entry

    failed = JournalOutcome(JournalState.FAILED, None, {}, None, None, 0, None, False,
                            "upstream timed out", {}, entry.at)
    await store.journal_outcome(entry.id, failed)
    got = await store.get_journal(entry.id)
    assert got is not None
    assert (got.state, got.status, got.error, got.undo) == (
        JournalState.FAILED, None, "upstream timed out", None)


@pytest.mark.parametrize("prior", [
    None, {}, [], [1, "x", None], "text", 0, False, 1.5, {"nested": {"a": None, "é": "ü"}},
])
async def test_prior_keeps_its_json_type(store: SqlStore, make_entry: EntryFactory,
                                         prior: Any) -> None:
    entry = make_entry(3, prior=prior)
    await store.journal_intent(entry)
    got = await store.get_journal(entry.id)
    assert got is not None
    assert got.prior == prior and type(got.prior) is type(prior)


async def test_outcome_can_set_or_clear_the_undo(store: SqlStore, make_entry: EntryFactory,
                                                 outcome: JournalOutcome) -> None:
    created = Undo("DELETE", "/customers/9")
    await store.journal_intent(make_entry(1, undo=None, reversible=False))
    await store.journal_outcome(f"{1:032x}", dataclasses.replace(outcome, undo=created,
                                                                  reversible=True))
    await store.journal_intent(make_entry(2))
    await store.journal_outcome(f"{2:032x}", dataclasses.replace(outcome, undo=None))

    first, second = await store.list_journal(JournalQuery(newest_first=False))
    assert (first.undo, first.reversible) == (created, True)
    assert (second.undo, second.reversible) == (None, False)


async def test_list_filters_order_and_limit(store: SqlStore, make_entry: EntryFactory) -> None:
    entries = [
        make_entry(0),
        make_entry(1, agent="billing-bot", upstream="billing"),
        make_entry(2, checkpoint=Checkpoint(run="run-2")),
        make_entry(3, upstream="billing"),
        make_entry(4, at=make_entry(3).at),  # same instant as 3: id breaks the tie
    ]
    for entry in entries:
        await store.journal_intent(entry)

    def at(n: int) -> Any:
        return make_entry(n).at

    async def ids(**query: Any) -> list[int]:
        return [int(e.id, 16) for e in await store.list_journal(JournalQuery(**query))]

    assert await ids() == [4, 3, 2, 1, 0]
    assert await ids(newest_first=False) == [0, 1, 2, 3, 4]
    assert await ids(limit=2) == [4, 3]
    assert await ids(limit=2, newest_first=False) == [0, 1]
    assert await ids(agent="billing-bot") == [1]
    assert await ids(upstream="billing") == [3, 1]
    assert await ids(upstream="billing", agent="support-bot") == [3]
    assert await ids(run="run-2") == [2]
    assert await ids(since=at(1)) == [4, 3, 2, 1]
    assert await ids(until=at(1)) == [1, 0]
    assert await ids(since=at(1), until=at(2)) == [2, 1]
    assert await ids(ids=(f"{0:032x}", f"{3:032x}", "missing")) == [3, 0]
    assert await ids(ids=()) == []
    assert await ids(agent="nobody") == []
    assert await store.get_journal("missing") is None


async def test_outcome_for_an_unknown_entry_raises(store: SqlStore,
                                                   outcome: JournalOutcome) -> None:
    with pytest.raises(LookupError):
        await store.journal_outcome("missing", outcome)


async def test_outcomes_in_one_batch_say_which_found_their_intent(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    first, second = make_entry(1), make_entry(2)
    assert all(await asyncio.gather(store.journal_intent(first), store.journal_intent(second)))
    found = await store.journal_outcomes([(first.id, outcome), ("missing", outcome),
                                          (second.id, outcome)])
    assert found == [True, False, True]
    for entry in (first, second):
        saved = await store.get_journal(entry.id)
        assert saved is not None and saved.state is outcome.state
        assert saved.status == outcome.status
    assert await store.pending_intents(make_entry(0).at) == []


def _driver_error(store_url: str, sqlite: type[Exception], asyncpg_name: str) -> type[Exception]:
    """The driver's own error for the backend under test (asyncpg imported for PostgreSQL only)."""
    if store_url.startswith("sqlite"):
        return sqlite
    import asyncpg
    error: type[Exception] = getattr(asyncpg, asyncpg_name)
    return error


async def test_driver_errors_reach_the_caller(store: SqlStore, store_url: str,
                                              make_entry: EntryFactory) -> None:
    await store.journal_intent(make_entry(1))
    with pytest.raises(_driver_error(store_url, sqlite3.IntegrityError, "UniqueViolationError")):
        await store.journal_intent(make_entry(1))

    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE journal RENAME TO journal_gone"))
    finally:
        await engine.dispose()
    with pytest.raises(_driver_error(store_url, sqlite3.OperationalError, "UndefinedTableError")):
        await store.journal_intent(make_entry(2))


async def test_a_closed_store_refuses_the_hot_path(store: SqlStore, make_entry: EntryFactory,
                                                   outcome: JournalOutcome) -> None:
    await store.close()
    with pytest.raises(RuntimeError):
        await store.journal_intent(make_entry(1))
    with pytest.raises(RuntimeError):
        await store.journal_outcome(f"{1:032x}", outcome)
    with pytest.raises(RuntimeError):
        await store.active_freezes()


@pytest.mark.parametrize("after", [
    None, {"name": "Zoë", "tags": [1, None]}, {}, [1, "x", None], [],
])
async def test_the_read_after_the_write_round_trips(store: SqlStore, make_entry: EntryFactory,
                                                    outcome: JournalOutcome, after: Any) -> None:
    entry = make_entry(4)
    await store.journal_intent(entry)
    got = await store.get_journal(entry.id)
    assert got is not None and got.after is None

    written = dataclasses.replace(outcome, after=after)
    await store.journal_outcome(entry.id, written)
    got = await store.get_journal(entry.id)
    assert got is not None and got.after == after and type(got.after) is type(after)
    assert await store.list_journal(JournalQuery()) == [got]
    assert got == dataclasses.replace(
        entry, **{f.name: getattr(written, f.name) for f in dataclasses.fields(written)})


async def test_an_intent_can_carry_the_read_after(store: SqlStore,
                                                  make_entry: EntryFactory) -> None:
    entry = make_entry(5, after={"id": 5, "name": "Zoë"})
    await store.journal_intent(entry)
    assert await store.get_journal(entry.id) == entry


async def test_a_completed_entry_is_marked_rolled_back_once(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    intent_only, done = make_entry(1), make_entry(2)
    for entry in (intent_only, done):
        await store.journal_intent(entry)
    await store.journal_outcome(done.id, outcome)
    at = outcome.completed_at
    assert await store.mark_rolled_back(intent_only.id, "plan-a", at) is False  # never completed
    assert await store.mark_rolled_back("nope", "plan-a", at) is False
    assert await store.mark_rolled_back(done.id, "plan-a", at) is True
    assert await store.mark_rolled_back(done.id, "plan-b", at) is False  # the first plan stays
    marked = await store.get_journal(done.id)
    assert marked is not None
    assert (marked.state, marked.rolled_back_plan, marked.rolled_back_at) == \
        (JournalState.ROLLED_BACK, "plan-a", at)
    assert (await store.get_journal(intent_only.id)).state is JournalState.INTENT  # type: ignore[union-attr]


async def test_json_values_read_back_exactly_whatever_the_encoder(
        store: SqlStore, make_entry: EntryFactory) -> None:
    """orjson encodes, except where it would change a value (big integers, infinities)."""
    prior = {"big": 2**70, "inf": float("inf"), "none": None, "text": "Zoë ✓", "1": [1.5]}
    entry = make_entry(7, prior=prior, request_headers={"x-plain": "ascii only"})
    assert await store.journal_intent(entry)
    got = await store.get_journal(entry.id)
    assert got is not None and got.prior == prior and got.request_headers == {"x-plain": "ascii only"}


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # kept connections: PostgreSQL's
async def test_the_hot_path_takes_new_connections_after_the_server_dropped_its_own(
        store: SqlStore, store_url: str, make_entry: EntryFactory,
        outcome: JournalOutcome) -> None:
    """The intent, outcome and decision writers each keep a connection on PostgreSQL
    (``hot_postgres.Pinned``); one the server dropped is given up for another, as the
    pool would (a drop not yet noticed may fail one call, as it may through a pool)."""
    import asyncpg

    async def at_most_one_failure(call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except Exception:  # noqa: BLE001 - asyncpg's errors for a lost connection vary
            return await call()

    first, second = make_entry(1), make_entry(2)
    assert await store.journal_intent(first)
    await store.journal_outcome(first.id, outcome)
    await store.append_audit_many([("bot", "call.allow", {"n": 1}, first.at)])
    admin = await asyncpg.connect(store_url.replace("+asyncpg", ""))
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()
    assert await at_most_one_failure(lambda: store.journal_intent(second))
    await at_most_one_failure(lambda: store.journal_outcome(second.id, outcome))
    await at_most_one_failure(
        lambda: store.append_audit_many([("bot", "call.allow", {"n": 2}, first.at)]))
    assert [r.seq for r in await store.list_audit()] == [1, 2]
    got = await store.get_journal(second.id)
    assert got is not None and got.state is JournalState.COMPLETED


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # the ride is PostgreSQL's
async def test_an_outcome_rides_on_the_next_intents_call(
        store: SqlStore, store_url: str, make_entry: EntryFactory,
        outcome: JournalOutcome, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL an outcome waits (``hot_postgres.RIDE``) for the next intents' call
    and is written by it (migration 0020); when that call fails (for its intents), the
    outcomes it carried are written alone, not failed with it: an outcome the store could
    not take would otherwise make every intents' call behind it fail."""
    from gateway.store import hot_postgres
    monkeypatch.setattr(hot_postgres, "RIDE", 3600.0)  # only an intents' call writes it
    first, second, third = make_entry(1), make_entry(2), make_entry(3)
    assert await store.journal_intent(first)
    saving = asyncio.create_task(store.journal_outcome(first.id, outcome))
    await asyncio.sleep(0)  # the outcome is queued, waiting (a yield, not a wait for time)
    while not store._hot_path()._riding:  # noqa: SLF001 - through the store's group commit
        await asyncio.sleep(0)
    assert await store.journal_intent(second)
    await saving
    got = await store.get_journal(first.id)
    assert got is not None and got.state is JournalState.COMPLETED
    assert await store.get_journal(second.id) == second

    assert await store.journal_intent(third)
    failing = asyncio.create_task(store.journal_outcome(third.id, outcome))
    while not store._hot_path()._riding:  # noqa: SLF001
        await asyncio.sleep(0)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the duplicate intent's error
        await store.journal_intent(second)  # already journaled: the call fails
    await failing  # not the outcome's failure: it went alone, and was written
    got = await store.get_journal(third.id)
    assert got is not None and got.state is JournalState.COMPLETED


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # the ride is PostgreSQL's
async def test_an_outcome_waits_for_the_next_intents_call_while_one_is_under_way(
        store: SqlStore, store_url: str, make_entry: EntryFactory,
        outcome: JournalOutcome, monkeypatch: pytest.MonkeyPatch) -> None:
    """``RIDE`` counts only while no intents' call is under way: one under way (here held
    by the arbiter's lock, as an engage would) is followed by the next, which takes the
    outcome; with none under way the outcome goes alone."""
    import asyncpg  # the PostgreSQL rows alone need the driver
    from sqlalchemy.engine import make_url

    from gateway.store import hot_postgres
    from gateway.store.killswitch import ARBITER_LOCK
    monkeypatch.setattr(hot_postgres, "RIDE", 0.0)  # would go alone at the next turn
    hot = store._hot_path()  # noqa: SLF001
    first, second = make_entry(1), make_entry(2)
    assert await store.journal_intent(first)
    dsn = make_url(store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute(f"BEGIN; SELECT pg_advisory_xact_lock({ARBITER_LOCK:d})")
        journaling = asyncio.create_task(store.journal_intent(second))
        while not await holder.fetchval(  # this test's database: others run alongside
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE NOT l.granted AND l.locktype = 'advisory' "
                "AND d.datname = current_database()"):
            await asyncio.sleep(0)  # until the intents' call waits for the lock
        saving = asyncio.create_task(store.journal_outcome(first.id, outcome))
        while not hot._riding:  # noqa: SLF001
            await asyncio.sleep(0)
        timer = hot._alone  # noqa: SLF001
        while hot._alone is timer:  # noqa: SLF001 - RIDE is over: the timer fired
            await asyncio.sleep(0)
        assert hot._riding and not saving.done()  # noqa: SLF001 - still riding: not alone
        await holder.execute("COMMIT")
    finally:
        await holder.close()
    assert await journaling
    await saving  # alone now: no intents' call under way
    got = await store.get_journal(first.id)
    assert got is not None and got.state is JournalState.COMPLETED
