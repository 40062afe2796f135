"""Writes whose agent left before their answer, in the store (``gateway.core.resend``).

``LeftWrites`` is a mixin of ``SqlStore``. A row is the write's journal entry id, the
key its resends have, and once the write is settled its state and the upstream's
answer: redacted in ``response``, exactly in ``sealed_response`` (as a held call's
answer is kept, ``gateway.store.codec``). A resend claims a row by one compare-and-set
UPDATE (``rejoined_at`` from NULL), so of any number of resends in any number of
processes one rejoins it at a time; the one that leaves in turn clears the claim
(``leave_write``) for the next.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, text, update
from sqlalchemy import select as sql_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from gateway.core.model import iso, parse_iso, utcnow
from gateway.core.resend import SENDING, UNKNOWN, LeftWrite
from gateway.core.seal import NO_SEALER, Sealer
from gateway.store import codec
from gateway.store.tables import LeftWriteRow

_entry, _key, _agent = col(LeftWriteRow.entry_id), col(LeftWriteRow.key), col(LeftWriteRow.agent)
_left_at, _rejoined_at = col(LeftWriteRow.left_at), col(LeftWriteRow.rejoined_at)
PRUNE_AFTER = timedelta(days=1)  # far past ``core.resend.REJOIN_WINDOW``
CLAIM_BATCH = 8  # free marks a resend reads at once, to try in turn
_columns = tuple(col(c) for c in LeftWriteRow.__table__.columns)  # type: ignore[attr-defined]
# a dead process's writes still on their way (``leases._OPEN``: PostgreSQL keeps them in
# ``journal_open``, 0023) that an agent sent, so may resend
_STRANDED = {
    False: text("SELECT id, resend_key, agent FROM journal WHERE state = 'intent' "
                "AND process = :process AND resend_key IS NOT NULL"),
    True: text("SELECT j.id, j.resend_key, j.agent FROM journal_open o JOIN journal j "
               "ON j.id = o.id WHERE o.process = :process AND j.resend_key IS NOT NULL"),
}
_SENDING = {  # the processes with such writes
    False: text("SELECT DISTINCT process FROM journal WHERE state = 'intent' "
                "AND process IS NOT NULL AND resend_key IS NOT NULL"),
    True: text("SELECT DISTINCT process FROM journal_open WHERE process IS NOT NULL"),
}
# marked unknown: a mark its agent made (still ``sending``, for good) changes; a claim stays
_STRAND = text("UPDATE left_writes SET state = :unknown WHERE entry_id = :id "
               "AND state = :sending")
_STRAND_NEW = text("INSERT INTO left_writes (entry_id, key, agent, left_at, state) "
                   "VALUES (:id, :key, :agent, :at, :unknown) ON CONFLICT (entry_id) DO NOTHING")


class LeftWrites:
    """``leave_write`` ... ``strand_writes`` of ``ports.Store``."""

    _engine: AsyncEngine  # reads
    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite
    _postgres: bool
    sealer: Sealer | None

    async def leave_write(self, left: LeftWrite) -> None:
        """Marks a day older than this one are past rejoining: they go with it."""
        async with self._writer.begin() as connection:
            await connection.execute(delete(LeftWriteRow).where(
                _left_at < iso(left.left_at - PRUNE_AFTER)))
            marked = await connection.execute(
                update(LeftWriteRow).where(_entry == left.entry_id)
                .values(left_at=iso(left.left_at), rejoined_at=None))
            if marked.rowcount == 0:
                await connection.execute(LeftWriteRow.__table__.insert().values(  # type: ignore[attr-defined]
                    entry_id=left.entry_id, key=left.key, agent=left.agent,
                    left_at=iso(left.left_at), rejoined_at=None, state=left.state,
                    response=None, sealed_response=None))

    async def settle_left(self, entry_id: str, state: str,
                          response: dict[str, Any] | None = None) -> None:
        sealer = self.sealer or NO_SEALER
        async with self._writer.begin() as connection:
            await connection.execute(update(LeftWriteRow).where(_entry == entry_id).values(
                state=state, response=codec.held_response_text(response),
                sealed_response=codec.held_response_sealed(response, sealer)))

    async def rejoin_write(self, key: str, agent: str, since: datetime) -> LeftWrite | None:
        """Read first, without a write: every write that may be a resend asks. Several
        resends at once (of as many writes left) each claim their own: one that finds
        the newest free mark claimed meanwhile tries the next, and reads again."""
        free = [_key == key, _agent == agent, _left_at >= iso(since), _rejoined_at.is_(None)]
        newest = sql_select(_entry).where(*free).order_by(_left_at.desc()).limit(CLAIM_BATCH)
        while True:
            async with self._engine.connect() as reader:
                found = [row[0] for row in await reader.execute(newest)]
            if not found:
                return None
            for entry_id in found:
                async with self._writer.begin() as connection:
                    claimed = await connection.execute(update(LeftWriteRow).where(
                        _entry == entry_id, *free).values(rejoined_at=iso(utcnow())))
                if claimed.rowcount == 1:
                    return await self.left_write(entry_id)

    async def left_write(self, entry_id: str) -> LeftWrite | None:
        async with self._engine.connect() as reader:
            row = (await reader.execute(sql_select(*_columns).where(_entry == entry_id))).first()
        if row is None:
            return None
        kept = LeftWriteRow(**row._mapping)
        return LeftWrite(kept.entry_id, kept.key, kept.agent, parse_iso(kept.left_at),
                         kept.state, codec.held_response(kept, self.sealer or NO_SEALER))

    async def left_keys(self, since: datetime) -> list[str]:
        free = sql_select(_key).where(_left_at >= iso(since), _rejoined_at.is_(None)).distinct()
        async with self._engine.connect() as reader:
            return [row[0] for row in await reader.execute(free)]

    async def strand_writes(self, process: str, at: datetime) -> list[str]:
        async with self._writer.begin() as connection:
            rows = (await connection.execute(_STRANDED[self._postgres],
                                             {"process": process})).all()
            for entry_id, key, agent in rows:
                values = {"id": entry_id, "key": key, "agent": agent, "at": iso(at),
                          "unknown": UNKNOWN, "sending": SENDING}
                await connection.execute(_STRAND, values)
                await connection.execute(_STRAND_NEW, values)
        return sorted({key for _, key, _ in rows})

    async def sending_processes(self) -> list[str]:
        async with self._engine.connect() as reader:
            return sorted(row[0] for row in await reader.execute(_SENDING[self._postgres]))
