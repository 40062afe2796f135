"""Shared fixtures.

Database: ``store_url`` runs a test once per backend (SQLite file in
tmp_path; a fresh PostgreSQL database per test, dropped afterwards) and
``store`` yields a started ``SqlStore`` on it. The PostgreSQL server is
``GATEWAY_TEST_POSTGRES`` (default postgresql://postgres@127.0.0.1:5432/postgres);
unreachable, it skips those tests, or fails them when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from gateway.store import SqlStore
from tests.external import missing

POSTGRES_SERVER = os.environ.get("GATEWAY_TEST_POSTGRES",
                                 "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES_SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        missing(f"PostgreSQL at {POSTGRES_SERVER} unreachable ({error!r}); "
                "set GATEWAY_TEST_POSTGRES")
        raise


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        (tmp_path / "db").mkdir()  # the gateway creates a database file, never its directory
        yield f"sqlite+aiosqlite:///{tmp_path / 'db' / 'gateway.db'}"
        return
    name = f"gw_{uuid.uuid4().hex[:16]}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(POSTGRES_SERVER).set(
            drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    started = SqlStore(store_url)
    await started.start()
    try:
        yield started
    finally:
        await started.close()
