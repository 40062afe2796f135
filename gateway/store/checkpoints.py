"""The audit log's signed checkpoints, and the chain hashes the Merkle tree is built from.

``CheckpointLog`` is a mixin of ``SqlStore``. A checkpoint is written once per
tree size (several processes on one store may sign the same size: the first
insert wins, the others are ignored, and they signed the same note anyway);
only its ``anchors`` JSON and its note (a witness's cosignature lines) are
updated later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.model import iso, parse_iso
from gateway.store.tables import CheckpointRow

if TYPE_CHECKING:
    from gateway.store.hot import HotPath


@dataclass(slots=True)
class StoredCheckpoint:  # the note and anchors grow as anchors answer
    size: int
    root: str  # base64
    note: str
    at: datetime
    anchors: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root, "note": self.note, "at": iso(self.at),
                "anchors": self.anchors}


def _from_row(row: CheckpointRow) -> StoredCheckpoint:
    return StoredCheckpoint(row.size, row.root, row.note, parse_iso(row.at),
                            json.loads(row.anchors))


_AUDIT_LEAVES = "SELECT seq, action, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"


class CheckpointLog:
    """``audit_leaves``, ``add_checkpoint``, ``anchor_checkpoint``, ``checkpoints``."""

    _engine: AsyncEngine  # reads
    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite
    if TYPE_CHECKING:
        def _hot_path(self) -> HotPath: ...  # SqlStore's

    async def audit_leaves(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """(seq, action, hash) of the records after ``after``, oldest first.

        Straight through the driver (``gateway.store.hot``): the checkpoint service
        asks five times a second, and through the ORM and aiosqlite's thread each
        empty answer cost about 1.5 ms of CPU (1% of a core, idle or not)."""
        rows = await self._hot_path().fetch(_AUDIT_LEAVES, (after, limit))
        return [(int(s), a, h) for s, a, h in rows]

    async def add_checkpoint(self, size: int, root: str, note: str, at: datetime) -> bool:
        """False if a checkpoint of this size was already stored."""
        try:
            async with AsyncSession(self._writer) as session:
                session.add(CheckpointRow(size=size, root=root, note=note, at=iso(at),
                                          anchors="{}"))
                await session.commit()
        except IntegrityError:
            return False
        return True

    async def anchor_checkpoint(self, size: int, anchors: dict[str, Any],
                                note: str | None = None) -> None:
        values: dict[str, Any] = {"anchors": json.dumps(anchors, sort_keys=True)}
        if note is not None:
            values["note"] = note
        async with AsyncSession(self._writer) as session:
            await session.exec(update(CheckpointRow)
                               .where(col(CheckpointRow.size) == size).values(**values))
            await session.commit()

    async def flush(self) -> None:
        """Until every commit so far is durable: on SQLite on disk, on PostgreSQL on the
        synchronous standby too (``HotPath.flush``). A checkpoint can be read before it
        is: its commit, cut while the primary waited for the standby, stays visible on
        the primary alone. Call it after the read, so its commit follows the row's."""
        await self._hot_path().flush()

    async def checkpoints(self, limit: int = 1000, upto: int | None = None,
                          ) -> list[StoredCheckpoint]:
        """The newest ``limit`` checkpoints (of at most ``upto`` leaves), oldest first."""
        statement = select(CheckpointRow).order_by(col(CheckpointRow.size).desc()).limit(limit)
        if upto is not None:
            statement = statement.where(col(CheckpointRow.size) <= upto)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [_from_row(r) for r in reversed(rows)]
