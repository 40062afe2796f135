"""Held calls in the store: the approval queue's rows and their exactly-once state changes.

``HeldCalls`` is a mixin of ``SqlStore`` (it uses the store's two
engines). Every state change is one UPDATE whose WHERE clause carries the
state the caller read (``status``, and for votes and claims the ``votes``
text, which ``codec.votes_text`` writes deterministically). The database
applies it atomically: on PostgreSQL a concurrent UPDATE of the same row
waits for the first to commit and then re-checks the WHERE clause against
the new row; on SQLite the transaction begins IMMEDIATE, holding the
database's write lock. So of any number of callers, in any number of
processes, exactly one sees ``True`` (one row changed); the others read the
call again and find it decided.

A pending call past its ``expires_at`` can no longer be claimed or rejected,
even before ``expire_held`` has swept it (the same rule as
``HeldCall.expired``: expired when ``now >= expires_at``).

Each change carries its audit record (``record``; the sweeper's are built
here) in the same transaction, which takes the chain's lock before it changes
the row: no crash leaves a change the audit does not show, and a record that
cannot be appended leaves the call unchanged.

A held call whose waiting agent left before its answer is marked (``left_key``, the
key its resend has); the first resend with that key rejoins it (``rejoin_held``, once,
with its ``approval.rejoined`` record) instead of queueing the call twice.

Delayed calls (``due_at`` set) are claimed by the gateway itself once due, with
the same compare-and-set as an operator's claim; shadowed writes (status
``shadow``) enter the queue only when promoted, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.approvals import REJOINABLE, ApprovalStatus, HeldCall, Vote, audit_detail
from gateway.core.model import AuditItem, iso, utcnow
from gateway.core.seal import NO_SEALER, Sealer
from gateway.store import codec
from gateway.store.audit import append_on, lock_chain
from gateway.store.tables import ApprovalRow

PENDING, APPROVED = ApprovalStatus.PENDING.value, ApprovalStatus.APPROVED.value
LEASE_LAPSED = ("the claim's lease ran out while the call was being executed (the process "
                "stopped); it may or may not have reached the upstream and is never re-sent")

SHADOW = ApprovalStatus.SHADOW.value

_id, _status, _votes = col(ApprovalRow.id), col(ApprovalRow.status), col(ApprovalRow.votes)
_expires_at, _lease_until = col(ApprovalRow.expires_at), col(ApprovalRow.lease_until)
_due_at = col(ApprovalRow.due_at)
_left_key, _left_at = col(ApprovalRow.left_key), col(ApprovalRow.left_at)
_REJOINABLE = tuple(status.value for status in REJOINABLE)
_named = (_id, col(ApprovalRow.agent), col(ApprovalRow.upstream), col(ApprovalRow.method),
          col(ApprovalRow.raw_path), col(ApprovalRow.rule))  # what a record names (audit_detail)
SWEEPER = "gateway"  # the actor of the sweeper's records


class HeldCalls:
    """``create_held`` ... ``abandon_lapsed_claims`` of ``ports.Store``."""

    _engine: AsyncEngine  # reads
    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite
    sealer: Sealer | None  # the exact request of a held call is sealed (gateway.core.seal)

    @property
    def _sealer(self) -> Sealer:
        return self.sealer or NO_SEALER

    async def create_held(self, call: HeldCall, record: AuditItem | None = None) -> None:
        async with AsyncSession(self._writer) as session, session.begin():
            connection = await session.connection()
            if record is not None:
                await lock_chain(connection)
            session.add(codec.held_row(call, self._sealer))
            if record is not None:
                await session.flush()
                await append_on(connection, [record])

    async def get_held(self, call_id: str) -> HeldCall | None:
        async with AsyncSession(self._engine) as session:
            row = await session.get(ApprovalRow, call_id)
        return None if row is None else codec.held_from_row(row, self._sealer)

    async def count_held(self, status: str) -> int:
        statement = select(func.count()).select_from(ApprovalRow).where(
            col(ApprovalRow.status) == status)
        async with AsyncSession(self._engine) as session:
            return int((await session.exec(statement)).one())

    async def list_held(self, status: str | None = None, agent: str | None = None,
                        upstream: str | None = None, limit: int = 100) -> list[HeldCall]:
        statement = select(ApprovalRow)
        if status is None:  # shadowed writes are proposals, not in the queue
            statement = statement.where(_status != SHADOW)
        for column, value in ((ApprovalRow.status, status), (ApprovalRow.agent, agent),
                              (ApprovalRow.upstream, upstream)):
            if value is not None:
                statement = statement.where(col(column) == value)
        statement = statement.order_by(col(ApprovalRow.at).desc(), _id.desc()).limit(limit)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.held_from_row(row, self._sealer) for row in rows]

    async def record_votes(self, call_id: str, before: tuple[Vote, ...],
                           after: tuple[Vote, ...], record: AuditItem | None = None) -> bool:
        return await self._change(call_id, _pending(before), record,
                                  votes=codec.votes_text(after))

    async def claim_held(self, call_id: str, before_votes: tuple[Vote, ...],
                         after_votes: tuple[Vote, ...], by: str, at: datetime,
                         lease_until: datetime, record: AuditItem | None = None) -> bool:
        return await self._change(
            call_id, _pending(before_votes, at), record, status=APPROVED,
            votes=codec.votes_text(after_votes), decided_by=by, decided_at=iso(at),
            lease_until=iso(lease_until))

    async def release_claim(self, call_id: str, votes: tuple[Vote, ...] | None = None,
                            record: AuditItem | None = None) -> bool:
        """Back to pending; with ``votes``, those replace the call's (a withdrawn vote)."""
        values: dict[str, Any] = {} if votes is None else {"votes": codec.votes_text(votes)}
        return await self._change(call_id, [_status == APPROVED], record, status=PENDING,
                                  decided_by=None, decided_at=None, lease_until=None, **values)

    async def finish_held(self, call_id: str, status: ApprovalStatus,
                          response: dict[str, Any] | None, journal_id: str | None,
                          error: str | None, hidden: frozenset[str] = frozenset(),
                          record: AuditItem | None = None) -> bool:
        if status not in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.UNKNOWN):
            raise ValueError(f"a claimed call finishes executed, failed or unknown, "
                             f"not {status.value}")
        return await self._change(call_id, [_status == APPROVED], record, status=status.value,
                                  response=codec.held_response_text(response, hidden),
                                  sealed_response=codec.held_response_sealed(
                                      response, self._sealer, hidden),
                                  journal_id=journal_id, error=error)

    async def reject_held(self, call_id: str, by: str, reason: str | None,
                          at: datetime, record: AuditItem | None = None) -> bool:
        return await self._change(call_id, _pending(None, at), record,
                                  status=ApprovalStatus.REJECTED.value, decided_by=by,
                                  decided_at=iso(at), reason=reason)

    async def expire_held(self, now: datetime) -> list[str]:
        return await self._sweep(
            "approval.expired", [_status == PENDING, _expires_at.is_not(None),
                                 _expires_at <= iso(now)], status=ApprovalStatus.EXPIRED.value)

    async def abandon_lapsed_claims(self, now: datetime) -> list[str]:
        return await self._sweep("approval.unknown", [_status == APPROVED, _lease_until < iso(now)],
                                 status=ApprovalStatus.UNKNOWN.value, error=LEASE_LAPSED)

    async def due_held(self, now: datetime, limit: int = 100) -> list[HeldCall]:
        statement = (select(ApprovalRow)
                     .where(_status == PENDING, _due_at.is_not(None), _due_at <= iso(now))
                     .order_by(_due_at, _id).limit(limit))
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.held_from_row(row, self._sealer) for row in rows]

    async def claim_due(self, call_id: str, by: str, at: datetime,
                        lease_until: datetime, record: AuditItem | None = None) -> bool:
        return await self._change(
            call_id, [_status == PENDING, _due_at.is_not(None), _due_at <= iso(at)], record,
            status=APPROVED, decided_by=by, decided_at=iso(at), lease_until=iso(lease_until))

    async def suspend_due(self, call_id: str, extra: dict[str, Any], action: str) -> bool:
        return bool(await self._sweep(action, [_id == call_id, _status == PENDING,
                                               _due_at.is_not(None)],
                                      due_at=None, extra=codec.dumps(extra)))

    async def promote_shadow(self, call_id: str, at: datetime, expires_at: datetime | None,
                             extra: dict[str, Any], record: AuditItem | None = None) -> bool:
        return await self._change(call_id, [_status == SHADOW], record, status=PENDING,
                                  at=iso(at),
                                  expires_at=None if expires_at is None else iso(expires_at),
                                  extra=codec.dumps(extra))

    async def leave_held(self, call_id: str, key: str, at: datetime,
                         record: AuditItem | None = None) -> bool:
        return await self._change(call_id, [_status.in_(_REJOINABLE)], record,
                                  left_key=key, left_at=iso(at))

    async def rejoin_held(self, key: str, agent: str, since: datetime) -> HeldCall | None:
        """Read first, without the chain's lock: a resend is rare, every hold asks."""
        left = [_left_key == key, _status.in_(_REJOINABLE), _left_at >= iso(since)]
        first = sql_select(_id).where(*left).order_by(col(ApprovalRow.at), _id).limit(1)
        async with self._engine.connect() as reader:
            found = (await reader.execute(first)).first()
        if found is None:
            return None
        async with self._writer.begin() as connection:
            await lock_chain(connection)
            rows = await _changed(connection, [_id == found[0], *left],
                                  {"left_key": None, "left_at": None})
            if not rows:  # another resend rejoined it first
                return None
            await append_on(connection, [(agent, "approval.rejoined", audit_detail(*rows[0]),
                                          utcnow())])
        return await self.get_held(found[0])

    async def _change(self, call_id: str, expected: Sequence[ColumnElement[bool]],
                      record: AuditItem | None, **values: Any) -> bool:
        """One compare-and-set UPDATE: True iff the row was in the expected state, and
        then ``record`` is appended in the same transaction."""
        statement = update(ApprovalRow).where(_id == call_id, *expected).values(**values)
        async with self._writer.begin() as connection:
            if record is not None:
                await lock_chain(connection)
            changed = (await connection.execute(statement)).rowcount == 1
            if changed and record is not None:
                await append_on(connection, [record])
        return changed

    async def _sweep(self, action: str, expected: Sequence[ColumnElement[bool]],
                     **values: Any) -> list[str]:
        """Change every row in the expected state, each with its record (``action``, by
        the sweeper); the ids changed, oldest first."""
        async with self._writer.begin() as connection:
            await lock_chain(connection)
            rows = sorted(await _changed(connection, expected, values))
            if rows:
                await append_on(connection, [(SWEEPER, action, audit_detail(*row), utcnow())
                                             for row in rows])
        return [row[0] for row in rows]


async def _changed(connection: AsyncConnection, expected: Sequence[ColumnElement[bool]],
                   values: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows an UPDATE changed, as ``_named`` columns."""
    statement = update(ApprovalRow).where(*expected).values(**values)
    if connection.dialect.update_returning:
        return [tuple(row) for row in await connection.execute(statement.returning(*_named))]
    # SQLite before 3.35: the IMMEDIATE transaction keeps the two statements exact.
    rows = [tuple(row) for row in await connection.execute(sql_select(*_named).where(*expected))]
    if rows:
        await connection.execute(statement.where(_id.in_([row[0] for row in rows])))
    return rows


def _pending(votes: tuple[Vote, ...] | None, at: datetime | None = None) -> list[ColumnElement[bool]]:
    """Still pending, with exactly ``votes`` (None: any), and not expired at ``at``."""
    expected = [_status == PENDING]
    if votes is not None:
        expected.append(_votes == codec.votes_text(votes))
    if at is not None:
        expected.append(or_(_expires_at.is_(None), _expires_at > iso(at)))
    return expected
