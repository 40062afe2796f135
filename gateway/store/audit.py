"""The audit chain in the store: one way to append a link.

Every record names the hash of the one before it (``core.audit.seal``), so an
append reads the last record and writes after it in one transaction that no
other chain writer can interleave with: on SQLite the database's write lock;
on PostgreSQL ``WRITE_LOCK``, an advisory lock every chain writer takes (a
batch of this module's appends is one call of ``gateway_audit_append``,
migration 0019; a release; ``gateway_chain_pending``, migration 0018). An
engage on PostgreSQL only tries that lock: when it is busy, the engage's
record waits in ``audit_pending`` (committed with the freeze) and is linked
right after (``store.killswitch``); a read of the chain links such records
first, so it never misses one. An operator's record, a batch of the proxy's
decisions and the record of a freeze change are all linked by ``append_in``
(SQLite) or the same hash in SQL (PostgreSQL); a held call's change and its
record by ``append_on``, in the change's own transaction (either store).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.audit import link
from gateway.core.model import AuditItem, AuditRecord
from gateway.store import codec
from gateway.store.hot import HotPath, Tx, numbered
from gateway.store.tables import AuditRow

WRITE_LOCK = 0x67775F7772697465  # "gw_write": the advisory lock over audit and freezes


async def append_in(tx: Tx, items: list[AuditItem]) -> list[AuditRecord]:
    """The next links of the chain, (actor, action, detail, at) in order, in ``tx``
    (which holds ``WRITE_LOCK``)."""
    last = await tx.fetch(codec.SELECT_LAST_AUDIT)
    previous = codec.audit_from_values(last[0]) if last else None
    records = []
    for actor, action, detail, at in items:
        previous = link(previous, at, actor, action, detail)
        records.append(previous)
    await tx.executemany(codec.INSERT_AUDIT, [codec.audit_params(r) for r in records])
    return records


async def lock_chain(connection: AsyncConnection) -> None:
    """In a transaction of the store's writer engine, before anything else it changes: the
    chain's lock (PostgreSQL's ``WRITE_LOCK``, taken first by every transaction that
    appends, so none waits for a row another holds while holding the lock; SQLite's
    writer already holds the database's write lock)."""
    if connection.dialect.name == "postgresql":
        await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK:d})")


async def append_on(connection: AsyncConnection, items: list[AuditItem]) -> list[AuditRecord]:
    """``append_in`` in a transaction of the store's writer engine (``lock_chain`` first):
    a state change and its record commit together."""
    return await append_in(_ConnectionTx(connection), items)


class _ConnectionTx:
    """``Tx`` over a SQLAlchemy connection, in its driver's own SQL."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._numbered = connection.dialect.name == "postgresql"

    def _sql(self, sql: str) -> str:
        return numbered(sql) if self._numbered else sql

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return (await self._connection.exec_driver_sql(self._sql(sql), tuple(args))).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._connection.exec_driver_sql(self._sql(sql), [tuple(row) for row in rows])

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list((await self._connection.exec_driver_sql(self._sql(sql), tuple(args))).all())


class AuditChain:
    """``append_audit`` ... ``find_audit`` of ``ports.AuditStore`` (a mixin of ``SqlStore``)."""

    _engine: AsyncEngine  # reads

    if TYPE_CHECKING:  # SqlStore's
        def _hot_path(self) -> HotPath: ...

        async def chain_pending_audit(self) -> int: ...

    async def append_audit(self, actor: str, action: str, detail: dict[str, Any],
                           at: datetime) -> AuditRecord:
        return (await self._hot_path().append_audit([(actor, action, detail, at)]))[0]

    async def append_audit_many(self, items: list[AuditItem]) -> list[AuditRecord]:
        """Several (actor, action, detail, at) records, chained in one transaction.

        This is the proxy's path (every decision on a write), through the driver
        like the journal: on SQLite through the same connection, so it never waits
        on a lock held by the journal's own writes; on PostgreSQL a commit that
        does not wait for the disk (``PostgresHotPath.transaction``), in one round
        trip (``gateway_audit_append``, migration 0019).
        """
        return await self._hot_path().append_audit(items, durable=False)

    async def find_audit(self, terms: list[str], limit: int = 200) -> list[AuditRecord]:
        """Records whose detail names any of ``terms`` (ids), oldest first: an entry's
        decision, the approval that held it, the plans that undid it."""
        if not terms:
            return []
        await self.chain_pending_audit()  # an engage's record is read like any other
        detail = col(AuditRow.detail)
        statement = (select(AuditRow).where(or_(*[detail.contains(f'"{t}"', autoescape=True)
                                                  for t in terms]))
                     .order_by(col(AuditRow.seq)).limit(limit))
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.audit_from_row(row) for row in rows]

    async def list_audit(self, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        await self.chain_pending_audit()  # an engage's record is read like any other
        statement = (select(AuditRow).where(col(AuditRow.seq) > after)
                     .order_by(col(AuditRow.seq)).limit(limit))
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.audit_from_row(row) for row in rows]
