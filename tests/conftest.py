"""Shared fixtures.

Database: ``store_url`` runs a test once per backend (SQLite file in
tmp_path; a fresh PostgreSQL database per test, dropped afterwards) and
``store`` yields a started ``SqlStore`` on it. The PostgreSQL server is
``GATEWAY_TEST_POSTGRES`` (default postgresql://postgres@127.0.0.1:5432/postgres);
unreachable, it skips those tests, or fails them when ``CI`` is set.

Markers (applied here by where a test lives, so a new file needs no decorator):
``e2e`` something real outside this process: gateway processes, a browser, the
recovery drill, or the PostgreSQL server (its half of the store suite is also
``postgres``); ``sdk`` third-party SDKs through a real gateway; ``thirdparty``
third-party servers (json-server, moto), also for a test elsewhere that uses
their fixtures; ``containers`` the deploy manifests. The fast lane,
``pytest -m "not e2e and not sdk and not thirdparty"``, is the pure core and the
in-process tests on SQLite with a fake upstream: it needs no database server,
and a folder it rules out is not even imported, so no test module it loads
imports asyncpg (tests/test_fast_lane.py keeps it so).
"""

from __future__ import annotations

import ast
import itertools
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
MARKERS = {"e2e": "e2e", "dashboard": "e2e", "faults": "e2e", "drill": "e2e",
            "sdk": "sdk", "thirdparty": "thirdparty", "deploy": "containers"}
TESTS = Path(__file__).parent
FAST_LANE = "not e2e and not sdk and not thirdparty"  # the README's, timed there


def _folder_marker(path: Path) -> str | None:
    try:
        return MARKERS.get(path.relative_to(TESTS).parts[0])
    except (ValueError, IndexError):
        return None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A marked folder that ``-m`` rules out whatever else its tests carry is not
    imported: the fast lane then loads no SDK, browser driver or database driver."""
    if collection_path.parent == TESTS and collection_path.is_dir():
        marker = _folder_marker(collection_path)
        if marker is not None and rules_out(config.getoption("markexpr"), marker):
            return True
    return None


def rules_out(markexpr: str, marker: str) -> bool:
    """Whether ``markexpr`` is false for every test marked ``marker``: false under each
    assignment of the other names. Any syntax beyond and/or/not/names: undecided, False."""
    if not markexpr:
        return False
    try:
        tree = ast.parse(markexpr, mode="eval")
    except SyntaxError:
        return False
    if not all(isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp,
                                 ast.Not, ast.Name, ast.Load)) for node in ast.walk(tree)):
        return False
    others = sorted({node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} - {marker})
    code = compile(tree, "<markexpr>", "eval")
    return not any(
        eval(code, {"__builtins__": {}}, {**dict(zip(others, values)), marker: True})
        for values in itertools.product([False, True], repeat=len(others)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = _folder_marker(Path(str(item.path)))
        if marker is not None:
            item.add_marker(marker)
        elif _starts_processes(item):
            item.add_marker("e2e")
        elif _borrows_from("tests.thirdparty", item):
            item.add_marker("thirdparty")
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "postgresql":
            item.add_marker("postgres")
            item.add_marker("e2e")  # a server outside this process, like the others


def _starts_processes(item: pytest.Item) -> bool:
    """A module elsewhere that uses tests/e2e/procs.py runs real gateway processes."""
    module = getattr(item, "module", None)
    return module is not None and any(
        getattr(value, "__module__", None) == "tests.e2e.procs" for value in vars(module).values())


def _borrows_from(package: str, item: pytest.Item) -> bool:
    """Whether one of the fixtures ``item`` uses is defined in ``package``."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        getattr(definition.func, "__module__", "").startswith(package)
        for definitions in info.name2fixturedefs.values() for definition in definitions)


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
    """An empty store; already migrated when the test also asks for ``store``, which
    would migrate it before the test anyway (a copy of one migrated once per test
    process: building the schema was most of the store suite's setup)."""
    migrated = "store" in request.node.fixturenames
    if request.param == "sqlite":
        (tmp_path / "db").mkdir()  # the gateway creates a database file, never its directory
        url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'gateway.db'}"
        if migrated:
            from tests.harness import fresh_sqlite

            await fresh_sqlite(url)
        yield url
        return
    name = f"gw_{uuid.uuid4().hex[:16]}"
    admin = await _admin_connection()
    try:
        if migrated:
            template = await _postgres_template(admin)
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield _database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _database_url(name: str) -> str:
    return make_url(POSTGRES_SERVER).set(
        drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


_template: str | None = None  # this test process's migrated PostgreSQL database


async def _postgres_template(admin: asyncpg.Connection) -> str:
    """A database migrated to head once per test process, copied by CREATE DATABASE
    ... TEMPLATE (nobody may be connected to it then: its engine is disposed)."""
    global _template
    if _template is None:
        from gateway.store.engine import create_engine, parse_url
        from gateway.store.migrate import upgrade

        name = f"gw_template_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        engine = create_engine(parse_url(_database_url(name)))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        _template = name
    return _template


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this process's template database, if it made one."""
    if _template is None:
        return
    import asyncio

    async def drop(name: str) -> None:
        admin = await _admin_connection()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop(_template))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    from gateway.store.sql import SqlStore

    started = SqlStore(store_url)
    await started.start()
    try:
        yield started
    finally:
        await started.close()
