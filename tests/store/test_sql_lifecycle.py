"""Start, migrate, restart, ping and close, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlmodel import SQLModel

from gateway.core.audit import verify
from gateway.core.model import Freeze, FreezeScope, JournalEntry, JournalQuery
from gateway.store.hot import numbered
from gateway.store.migrate import alembic_config, upgrade
from gateway.store.sql import SqlStore, open_store

T0 = datetime(2024, 5, 3, tzinfo=UTC)
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_restart_keeps_everything(store_url: str,
                                        make_entry: Callable[..., JournalEntry]) -> None:
    first = open_store(store_url)
    await first.start()
    frozen = Freeze(FreezeScope.GLOBAL, None, "incident", "alice", T0)
    entry = make_entry(1)
    assert await first.journal_intent(entry)  # before the freeze: after it, refused
    await first.engage(frozen)
    await first.append_audit("alice", "test", {"k": "v"}, T0)
    await first.close()

    second = open_store(store_url)
    await second.start()
    try:
        assert await second.active_freezes() == [frozen]
        assert await second.list_journal(JournalQuery()) == [entry]
        records = await second.list_audit()
        assert len(records) == 2 and verify(records).ok
    finally:
        await second.close()


async def _schema_version(store: SqlStore) -> list[str]:
    async with store._engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in result]


async def test_migrating_again_is_a_no_op(store: SqlStore) -> None:
    await store.append_audit("alice", "test", {}, T0)
    await upgrade(store._engine)
    await store.start()
    assert await _schema_version(store) == [HEAD]
    assert len(await store.list_audit()) == 1


async def test_two_stores_starting_at_once_migrate_once(store_url: str) -> None:
    stores = [SqlStore(store_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        assert await _schema_version(stores[0]) == [HEAD]
        assert all([await s.ping() for s in stores])
    finally:
        for s in stores:
            await s.close()


def _differences(connection: Connection) -> list[object]:
    """What the migrations built that the tables do not describe, or the reverse, for
    this connection's dialect (an index made for one dialect only, ``ddl_if``, is
    compared on that one)."""
    dialect = connection.dialect.name

    def described_here(item: object, *_: object) -> bool:
        only = getattr(item, "_ddl_if", None)
        return only is None or only.dialect in (None, dialect)

    context = MigrationContext.configure(connection, opts={"include_object": described_here})
    return list(compare_metadata(context, SQLModel.metadata))


@pytest.mark.filterwarnings("ignore:.*expression-based index")  # SQLite cannot reflect it
async def test_the_migrations_build_what_the_tables_describe(store: SqlStore) -> None:
    async with store._engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_ping(store: SqlStore, tmp_path: Path) -> None:
    assert await store.ping()
    (tmp_path / "a-file").write_text("")
    for url in (f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'gateway.db'}",
                "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"):
        unreachable = SqlStore(url)
        try:
            assert await unreachable.ping() is False
        finally:
            await unreachable.close()


@pytest.mark.parametrize("url", ["mysql+aiomysql://u@h/db", "sqlite+aiosqlite://",
                                 "sqlite+aiosqlite:///:memory:"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        SqlStore(url)


def test_placeholders_are_numbered_for_asyncpg() -> None:
    assert numbered("INSERT INTO t (a, b) VALUES (?, ?)") == "INSERT INTO t (a, b) VALUES ($1, $2)"
    assert numbered("SELECT 1") == "SELECT 1"
