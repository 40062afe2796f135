"""A start runs Alembic only when the schema is not at head (``gateway.store.migrate``)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from gateway.store.engine import create_engine, parse_url
from gateway.store.migrate import head, upgrade
from gateway.store.sql import SqlStore


@pytest.fixture
def alembic_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The revisions Alembic's upgrade is asked for, from now on (it still runs)."""
    runs: list[str] = []
    real = command.upgrade

    def counted(config: Any, revision: str, **options: Any) -> None:
        runs.append(revision)
        real(config, revision, **options)

    monkeypatch.setattr(command, "upgrade", counted)
    return runs


async def _versions(store: SqlStore) -> list[str]:
    async with store._engine.connect() as connection:
        return [row[0] for row in await connection.execute(
            text("SELECT version_num FROM alembic_version"))]


async def test_a_current_schema_is_not_migrated_again(store_url: str,
                                                      alembic_runs: list[str]) -> None:
    first = SqlStore(store_url)
    await first.start()  # a new database: migrated
    await first.close()
    assert alembic_runs == ["head"]
    second = SqlStore(store_url)
    await second.start()
    try:
        assert alembic_runs == ["head"]  # one read of alembic_version, no Alembic
        assert await _versions(second) == [head()]
        assert await second.ping()
    finally:
        await second.close()


async def test_a_schema_behind_head_is_upgraded_at_start(store_url: str,
                                                         alembic_runs: list[str]) -> None:
    engine = create_engine(parse_url(store_url))
    try:
        await upgrade(engine, "0014")  # the release before the newest migration
    finally:
        await engine.dispose()
    store = SqlStore(store_url)
    await store.start()
    try:
        assert alembic_runs == ["0014", "head"]
        assert await _versions(store) == [head()] and head() != "0014"
        assert await store.ping()
    finally:
        await store.close()
