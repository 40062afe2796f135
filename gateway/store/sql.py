"""``SqlStore``: the ``ports.Store`` on SQLite or PostgreSQL, one mixin per role.

Two ways in, by how hot the call is. The calls made on every proxied write
(``journal.py``: intents and outcomes, group committed by ``group.py``), the
kill switch (``killswitch.py``) and the audit chain (``audit.py``) go straight
through the driver (``hot.py``, one implementation per dialect). An intent
goes in only if no freeze covers it, decided by the store in the same
statement. Everything an operator triggers goes through SQLAlchemy and
SQLModel, where clarity is worth more than a fraction of a millisecond.

Writes that read before they write (the audit chain's last link, the one
active freeze per scope and target) are serialized: a transaction-scoped
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on the hot path's one
connection on SQLite. A freeze change and its audit record commit together
or not at all. The approval queue (``approvals.py``) needs no such lock: each
of its changes is a single compare-and-set UPDATE. Nor do rollback plans
(``rollbacks.py``): a plan is written whole in one transaction, then changed
one row at a time by its one executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
from typing import Any

from sqlalchemy import text

from gateway.core.seal import Sealer
from gateway.group_commit import GroupCommit
from gateway.ports import Bus
from gateway.store.audit import AuditChain
from gateway.store.checkpoints import CheckpointLog
from gateway.store.engine import (
    IMMEDIATE,
    asyncpg_dsn,
    create_engine,
    driver_errors,
    is_postgres,
    parse_url,
    sqlite_path,
)
from gateway.store.held_calls import HeldCalls
from gateway.store.hot import HotPath
from gateway.store.hot_postgres import PostgresHotPath
from gateway.store.hot_sqlite import SqliteHotPath
from gateway.store.journal import JournalLog
from gateway.store.killswitch import KillSwitch
from gateway.store.leases import Leases
from gateway.store.left_writes import LeftWrites
from gateway.store.migrate import upgrade
from gateway.store.reports import ReportQueries
from gateway.store.rollbacks import RollbackPlans
from gateway.store.seal_key import sealer_for
from gateway.store.tripwire_counts import TripwireCounts

log = logging.getLogger("gateway.store")
PING_TIMEOUT = 5.0


def default_sealer(url: Any, journal_key: str | None = None) -> Sealer:
    """``journal_key``'s sealer, else on SQLite the key file beside the database (an
    in-memory database gets a key that lives as long as it does), else none."""
    if is_postgres(url):
        return sealer_for(journal_key, None)
    path = sqlite_path(url)
    if not journal_key and str(path) in ("", ":memory:"):
        return Sealer(os.urandom(32), "an in-memory database's own key")
    return sealer_for(journal_key, path)


class SqlStore(KillSwitch, JournalLog, AuditChain, HeldCalls, RollbackPlans,
               ReportQueries, CheckpointLog, Leases, TripwireCounts, LeftWrites):
    """The store behind the gateway.

    >>> store = SqlStore("sqlite+aiosqlite:///./gateway.db")  # doctest: +SKIP
    >>> await store.start()                                   # doctest: +SKIP
    """

    def __init__(self, database_url: str, process: str | None = None,
                 sealer: Sealer | None = None, fsync: bool = True) -> None:
        self.url = parse_url(database_url)
        # what held calls' exact requests are sealed with (gateway.core.seal); unset at
        # start: the SQLite key file, or none on PostgreSQL (the gateway sets journal_key's)
        self.sealer: Sealer | None = sealer
        self.process = process or process_name()  # journaled with every intent
        self._postgres = is_postgres(self.url)
        self._duplicate = (sqlite3.IntegrityError, *driver_errors(self.url).unique)
        self._engine = create_engine(self.url)  # reads (and the schema's migrations)
        # writes: on SQLite their own connections, whose lock waits are the gateway's
        self._writes = self._engine if self._postgres else create_engine(self.url, writer=True)
        self._writer = self._writes.execution_options(**{IMMEDIATE: True})
        self._hot: HotPath | None = None
        self._fsync = fsync  # SQLite: intents on disk before their write is sent
        self._intents = GroupCommit(self._commit_intents)
        self._unsure: set[str] = set()  # intents of a batch whose commit may have happened

    def __repr__(self) -> str:
        return f"SqlStore({self.url.render_as_string()!r})"

    async def start(self) -> None:
        """Open the hot path (on SQLite: WAL mode), then create or migrate the schema."""
        if self._hot is not None:
            return
        if self.sealer is None:
            self.sealer = default_sealer(self.url)
        hot: HotPath
        if self._postgres:
            hot = await PostgresHotPath.connect(asyncpg_dsn(self.url), process=self.process)
        else:
            sqlite_path(self.url).parent.mkdir(parents=True, exist_ok=True)
            hot = await SqliteHotPath.connect(sqlite_path(self.url), self._fsync)
        try:
            await upgrade(self._engine)
        except BaseException:
            await hot.close()
            raise
        await hot.warm()  # after the schema: the writers' statements name its types
        self._hot = hot

    def bus(self) -> Bus:
        """The message bus of the processes sharing this store (not started)."""
        return self._hot_path().bus(self.process)

    async def close(self) -> None:
        await self._intents.close()
        hot, self._hot = self._hot, None
        try:
            if hot is not None:
                await hot.close()
        finally:
            await self._engine.dispose()
            if self._writes is not self._engine:
                await self._writes.dispose()

    async def ping(self) -> bool:
        """Whether the store can take a write now: a write probe, not a flag.

        The journal's write path, one write transaction holding an UPDATE that
        matches no row: refused by a read-only or recovering PostgreSQL, a
        SQLite file that is read-only or locked past the timeout, or whose
        path no longer names the file the store opened (``SqliteFile``). Then
        the admin connection, which every operator call needs."""
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self._hot_path().probe()
                async with self._engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("store health: cannot take a write: %s", exc)
            return False
        return True

    def _hot_path(self) -> HotPath:
        if self._hot is None:
            raise RuntimeError(f"{self!r} is not started, or already closed")
        return self._hot


def open_store(database_url: str, fsync: bool = True) -> SqlStore:
    """A ``SqlStore`` for ``sqlite+aiosqlite:///FILE`` or ``postgresql+asyncpg://...``; it
    still needs ``await store.start()`` (connect and migrate) and ``await store.close()``."""
    return SqlStore(database_url, fsync=fsync)


def process_name() -> str:
    """This process's name on the bus and in the journal: pid and 8 random hex digits."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"
