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
from typing import Any

from sqlalchemy import select as sql_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.model import iso, parse_iso
from gateway.store.tables import AuditRow, CheckpointRow


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


class CheckpointLog:
    """``audit_leaves``, ``add_checkpoint``, ``anchor_checkpoint``, ``checkpoints``."""

    _engine: AsyncEngine

    async def audit_leaves(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """(seq, action, hash) of the records after ``after``, oldest first."""
        statement = (sql_select(col(AuditRow.seq), col(AuditRow.action), col(AuditRow.hash))
                     .where(col(AuditRow.seq) > after).order_by(col(AuditRow.seq)).limit(limit))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [(int(s), a, h) for s, a, h in rows]

    async def add_checkpoint(self, size: int, root: str, note: str, at: datetime) -> bool:
        """False if a checkpoint of this size was already stored."""
        try:
            async with AsyncSession(self._engine) as session:
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
        async with AsyncSession(self._engine) as session:
            await session.exec(update(CheckpointRow)
                               .where(col(CheckpointRow.size) == size).values(**values))
            await session.commit()

    async def checkpoints(self, limit: int = 1000, upto: int | None = None,
                          ) -> list[StoredCheckpoint]:
        """The newest ``limit`` checkpoints (of at most ``upto`` leaves), oldest first."""
        statement = select(CheckpointRow).order_by(col(CheckpointRow.size).desc()).limit(limit)
        if upto is not None:
            statement = statement.where(col(CheckpointRow.size) <= upto)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [_from_row(r) for r in reversed(rows)]
