"""Shared fixtures.

Database: ``store_url`` runs a test once per backend (SQLite file in
tmp_path; a fresh PostgreSQL database per test, dropped afterwards) and
``store`` yields a started ``SqlStore`` on it. The PostgreSQL server is
``GATEWAY_TEST_POSTGRES`` (default postgresql://postgres@127.0.0.1:5432/postgres);
unreachable, it skips those tests, or fails them when ``CI`` is set.

Markers (applied here by where a test lives, so a new file needs no decorator):
``e2e`` real gateway processes or a browser, ``sdk`` third-party SDKs through a
real gateway, ``thirdparty`` third-party servers (json-server, moto), ``postgres``
the PostgreSQL half of the one store suite. The fast lane,
``pytest -m "not e2e and not sdk and not thirdparty and not postgres"``, needs
neither a database server nor asyncpg: the driver is imported only by the
tests that use it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from tests.external import missing

if TYPE_CHECKING:
    import asyncpg

    from gateway.store.sql import SqlStore

POSTGRES_SERVER = os.environ.get("GATEWAY_TEST_POSTGRES",
                                 "postgresql://postgres@127.0.0.1:5432/postgres")


# Where a test lives says what it needs; the first matching folder wins.
_MARKERS = {"e2e": "e2e", "dashboard": "e2e", "faults": "e2e", "drill": "e2e",
            "sdk": "sdk", "thirdparty": "thirdparty", "deploy": "containers"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        try:
            folder = Path(str(item.path)).relative_to(tests).parts[0]
        except ValueError:
            continue
        if folder in _MARKERS:
            item.add_marker(_MARKERS[folder])
        elif _starts_processes(item):
            item.add_marker("e2e")
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "postgresql":
            item.add_marker("postgres")


def _starts_processes(item: pytest.Item) -> bool:
    """A module elsewhere that uses tests/e2e/procs.py runs real gateway processes."""
    module = getattr(item, "module", None)
    return module is not None and any(
        getattr(value, "__module__", None) == "tests.e2e.procs" for value in vars(module).values())


async def _admin_connection() -> asyncpg.Connection:
    import asyncpg  # only the PostgreSQL half of the suite needs the driver

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
    from gateway.store.sql import SqlStore

    started = SqlStore(store_url)
    await started.start()
    try:
        yield started
    finally:
        await started.close()
