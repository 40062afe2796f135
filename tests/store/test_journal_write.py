"""Migration 0022's ``gateway_journal_write`` on PostgreSQL: the rows it takes are the
hot path's columns, every field goes through them exactly (intents, and the outcomes
that ride on their call), and it upgrades from 0021 and downgrades to it."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import text

from gateway.core.model import JournalEntry, JournalOutcome, JournalState
from gateway.store import codec
from gateway.store import killswitch as ks
from gateway.store.engine import create_engine, parse_url
from gateway.store.migrate import alembic_config, head, upgrade
from gateway.store.sql import SqlStore
from gateway.store.tables import JournalRow

EntryFactory = Callable[..., JournalEntry]
MIGRATION = (Path(__file__).resolve().parents[2] / "gateway" / "store" / "migrations"
             / "versions" / "0027_intent_resend_key.py")
# what JSON batches made hard: escapes, JSON inside JSON, characters beyond the BMP
TRICKY = 'a "quoted" \\ back\\slash\nnew line\ttab {"json": "in \\"json\\""} 🚀 ñ'


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0027", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pg_type(column: str) -> str:
    kind = JournalRow.__table__.c[column].type  # type: ignore[attr-defined]
    return ("integer" if isinstance(kind, sa.Integer)
            else "boolean" if isinstance(kind, sa.Boolean) else "text")


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_the_rows_it_takes_are_the_hot_paths_columns_with_the_tables_types(
        store: SqlStore, store_url: str) -> None:
    """A column added to the journal's intents or outcomes needs a migration of these
    types too: the hot path sends its tuples as they are, by position."""
    async with store._engine.connect() as connection:  # noqa: SLF001
        rows = (await connection.execute(text(
            "SELECT t.typname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid "
            "WHERE t.typname IN ('journal_intent', 'journal_outcome') AND a.attnum > 0 "
            "ORDER BY t.typname, a.attnum"))).all()
    found = {name: [(c, kind) for n, c, kind in rows if n == name]
             for name in ("journal_intent", "journal_outcome")}
    assert found["journal_intent"] == [(c, _pg_type(c)) for c in ks.INTENT_COLUMNS]
    assert found["journal_outcome"] == [(c, _pg_type(c))
                                        for c in (*codec.OUTCOME_COLUMNS, "id")]
    assert _migration().INTENT_COLUMNS == ks.INTENT_COLUMNS  # the newest migration's


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # the ride is PostgreSQL's
async def test_an_intent_and_a_riding_outcome_round_trip_every_field(
        store: SqlStore, store_url: str, make_entry: EntryFactory,
        outcome: JournalOutcome, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.store import hot_postgres
    monkeypatch.setattr(hot_postgres, "RIDE", 3600.0)  # only an intents' call writes it
    first = make_entry(1, request_body=TRICKY, query=TRICKY, path="/customers/" + TRICKY,
                       request_headers={"x-note": TRICKY}, prior={"name": TRICKY})
    second = make_entry(2, request_body=None, prior=None, prior_status=None, undo=None,
                        reversible=False)
    assert await store.journal_intent(first)
    assert await store.get_journal(first.id) == first
    written = dataclasses.replace(outcome, response_body=TRICKY, error=TRICKY,
                                  response_headers={"x-tricky": TRICKY}, after={"a": TRICKY})
    saving = asyncio.create_task(store.journal_outcome(first.id, written))
    while not store._hot_path()._riding:  # noqa: SLF001 - through the store's group commit
        await asyncio.sleep(0)
    assert await store.journal_intent(second)  # carries the outcome
    await saving
    expected = dataclasses.replace(
        first, **{f.name: getattr(written, f.name) for f in dataclasses.fields(written)})
    assert expected.state is JournalState.COMPLETED
    assert await store.get_journal(first.id) == expected
    assert await store.get_journal(second.id) == second


async def _functions(store_url: str) -> set[str]:
    engine = create_engine(parse_url(store_url))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'gateway_journal_%' UNION "
                "SELECT typname FROM pg_type WHERE typname LIKE 'journal_%'"))
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_upgrade_from_0021_and_downgrade_to_it(store_url: str,
                                                     make_entry: EntryFactory) -> None:
    engine = create_engine(parse_url(store_url))
    try:
        await upgrade(engine, "0021")
        before = await _functions(store_url)
        assert "gateway_journal_write" not in before
        await upgrade(engine, "0022")
        assert await _functions(store_url) == before | {
            "gateway_journal_write", "journal_intent", "journal_outcome"}
        async with engine.connect() as connection, connection.begin():
            await connection.run_sync(
                lambda sync: command.downgrade(alembic_config(sync), "0021"))
        assert await _functions(store_url) == before  # 0021's calls, without 0022's
    finally:
        await engine.dispose()
    store = SqlStore(store_url)  # and up again at start
    await store.start()
    try:
        entry = make_entry(3)
        assert await store.journal_intent(entry)
        assert await store.get_journal(entry.id) == entry
        assert "gateway_journal_write" in await _functions(store_url)
        assert head() == "0027"  # 0023 to 0026 keep these functions as they are
    finally:
        await store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_0027_adds_the_resend_key_to_the_rows_and_takes_it_back(
        store: SqlStore, store_url: str, make_entry: EntryFactory) -> None:
    async def attributes() -> list[str]:
        async with store._engine.connect() as connection:  # noqa: SLF001
            return list((await connection.execute(text(
                "SELECT a.attname FROM pg_type t JOIN pg_attribute a "
                "ON a.attrelid = t.typrelid WHERE t.typname = 'journal_intent' "
                "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"))).scalars())

    assert await attributes() == list(ks.INTENT_COLUMNS)
    entry = make_entry(4)
    assert await store.journal_intent(entry)
    async with store._engine.connect() as connection, connection.begin():  # noqa: SLF001
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0026"))
    assert await attributes() == list(_migration().BEFORE)
    async with store._engine.connect() as connection, connection.begin():  # noqa: SLF001
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
    assert await attributes() == list(ks.INTENT_COLUMNS)
    read = await store.get_journal(entry.id)
    assert read is not None and read.resend_key is None  # the column went with 0026


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_the_warm_up_reads_the_row_types_before_the_first_write(
        store: SqlStore, store_url: str, make_entry: EntryFactory,
        outcome: JournalOutcome, monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncpg reads a row type's layout once per connection, with a query of its own
    (up to 80 ms); the store's start (``HotPath.warm``) does it for both writers."""
    from gateway.store import hot_postgres
    monkeypatch.setattr(hot_postgres, "RIDE", 0.0)  # the outcome alone, on its connection
    hot = store._hot_path()  # noqa: SLF001 - started, so warmed
    from asyncpg.connection import Connection
    watched = {id(pinned._connection._con)  # noqa: SLF001 - the driver's connections
               for pinned in (hot._intents, hot._outcomes)}  # noqa: SLF001
    read = Connection._introspect_types

    async def checked(self: Connection, *args: object, **options: object) -> object:
        assert id(self) not in watched, "a writer read the types at its first write"
        return await read(self, *args, **options)
    monkeypatch.setattr(Connection, "_introspect_types", checked)
    entry = make_entry(4)
    assert await store.journal_intent(entry)
    await store.journal_outcome(entry.id, outcome)
    got = await store.get_journal(entry.id)
    assert got is not None and got.state is JournalState.COMPLETED
