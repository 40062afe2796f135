"""The hot path on PostgreSQL: two asyncpg pools (``gateway.store.hot``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from gateway.store.engine import connect_primary
from gateway.store.hot import Tx, numbered

log = logging.getLogger("gateway.store")


class PostgresHotPath:
    """Two asyncpg pools: ``pool`` for what must be durable when it returns, and a
    small one whose commits do not wait for the disk (journal outcomes: one lost
    in a crash leaves its entry an intent, outcome unknown, as a crash before the
    outcome always did; the batched decisions of the audit trail, see
    ``chained_insert``). Neither resets a connection it takes back unless it
    is still in a transaction: the hot path leaves no other session state, and
    the reset was one more round trip per statement."""

    def __init__(self, pool: asyncpg.Pool, unsynced: asyncpg.Pool) -> None:
        self._pool = pool
        self._unsynced = unsynced

    @classmethod
    async def connect(cls, dsn: str, max_size: int = 10) -> PostgresHotPath:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, reset=_rollback,
                                         connect=connect_primary)  # one host at a time
        try:
            unsynced = await asyncpg.create_pool(
                dsn, min_size=1, max_size=2, reset=_rollback, connect=connect_primary,
                server_settings={"synchronous_commit": "off"})
        except BaseException:
            await pool.close()
            raise
        return cls(pool, unsynced)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        status: str = await self._pool.execute(numbered(sql), *args)
        return int(status.rsplit(" ", 1)[-1])

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        return list(await self._pool.fetch(numbered(sql), *args))

    async def fetch_unsynced(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        """One statement whose commit returns before it is on disk."""
        return list(await self._unsynced.fetch(numbered(sql), *args))

    @asynccontextmanager
    async def transaction(self, locks: Sequence[int] = ()) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as connection:
            taken = ", ".join(f"pg_advisory_xact_lock({key:d})" for key in locks)
            await connection.execute("BEGIN" + (f"; SELECT {taken}" if taken else ""))
            try:
                yield _PostgresTx(connection)
            except BaseException:
                await _abandon(connection)
                raise
            await connection.execute("COMMIT")

    async def chained_insert(self, last_sql: str, insert_sql: str,
                             build: Callable[[Sequence[Any] | None], list[Sequence[Any]]],
                             lock_key: int) -> None:
        """On the unsynced pool: the chain's lock is held for round trips, not for a
        disk flush, so an engage (which takes the same lock) does not queue behind
        the flush of a batch of decisions. Those decisions were already only in
        memory until now (``AuditTrail``'s queue), so a crash loses at most the
        last fraction of a second of them, as before; WAL is replayed in order,
        so what survives is a prefix and the chain stays whole. Any synchronous
        commit after it (an engage's, an intent's) flushes it too."""
        async with self._unsynced.acquire() as connection:
            await connection.execute(f"BEGIN; SELECT pg_advisory_xact_lock({lock_key:d})")
            try:
                last = await connection.fetchrow(numbered(last_sql))
                await connection.executemany(numbered(insert_sql), build(last))
            except BaseException:
                await _abandon(connection)
                raise
            await connection.execute("COMMIT")

    async def flush(self) -> None:
        """Nothing to do: ``pool`` commits wait for the disk (and a synchronous standby)."""

    async def close(self) -> None:
        await self._unsynced.close()
        await self._pool.close()


async def _abandon(connection: asyncpg.Connection) -> None:
    """Roll back after an error, never hiding it: on a connection that broke, or is still
    busy with the statement the error interrupted ("another operation is in progress"),
    the ROLLBACK fails too; then the connection is dropped (the server rolls back) and the
    caller re-raises the first error, the one that says what happened."""
    try:
        await connection.execute("ROLLBACK")
    except BaseException as exc:  # noqa: BLE001 - the error being handled is the real one
        log.warning("rollback failed (%s); dropping the connection", exc)
        connection.terminate()


async def _rollback(connection: asyncpg.Connection) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class _PostgresTx:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status: str = await self._connection.execute(numbered(sql), *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self._connection.fetch(numbered(sql), *args))
