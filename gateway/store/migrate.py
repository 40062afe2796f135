"""Create or upgrade the schema at start, with Alembic, from the package itself.

No alembic.ini: the Config is built here and points at the ``migrations``
folder next to this file, so an installed gateway migrates its own database.
The upgrade runs in one transaction on the caller's async engine. Two
processes starting together must not both migrate: on PostgreSQL the
transaction first takes an advisory lock (released at commit), on SQLite it
begins IMMEDIATE, which holds the database's write lock. The second process
then finds the schema at head and does nothing.

A schema already at head (every start but the first after an upgrade) is
told by one read of ``alembic_version`` before any of that: Alembic, which
reads every migration script and runs ``env.py`` on each upgrade, was most
of an in-process gateway's start. The head is read from the scripts once per
process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.engine import IMMEDIATE

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x67775F6D69677261  # "gw_migra": any constant the gateway alone uses


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for this package; env.py runs on ``connection``.

    To write the next migration, inside ``AsyncConnection.run_sync``:
    ``command.revision(alembic_config(conn), "add approvals", autogenerate=True)``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


@cache
def head() -> str | None:
    """The newest revision of the package's migrations."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Connection) -> tuple[str, ...]:
    """The revisions the database is at; () before the first migration."""
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if revision == "head":
        async with engine.connect() as connection:
            if await connection.run_sync(_current) == (head(),):
                return  # current: nothing to lock, nothing to run
    async with engine.connect() as connection:
        await connection.execution_options(**{IMMEDIATE: True})
        async with connection.begin():
            if connection.dialect.name == "postgresql":
                await connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            await connection.run_sync(_upgrade, revision)
