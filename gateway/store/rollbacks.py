"""Rollback plans: a plan and its steps, and each step's progress.

``RollbackPlans`` is a mixin of ``SqlStore`` (it uses the store's two
engines). A plan is written whole, with all its steps, in one transaction;
afterwards only a step's status (with its detail and the journal entry of
its compensating call) and the plan's status change. Each change is one
UPDATE of one row, plus the plan's ``updated_at``, so no lock is needed: the
executor of a plan is its only writer.

``updated_at`` (on plans and steps) is the store's own record of the last
change, not part of ``Plan`` or ``Step``. A step's ``expected`` state is
NULL when unknown; the ``ABSENT`` marker is stored as the JSON object it is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.model import iso, utcnow
from gateway.core.rollback import Plan, PlanStatus, StepStatus
from gateway.store import codec
from gateway.store.tables import RollbackPlanRow, RollbackStepRow

_plan_id, _plan_status = col(RollbackPlanRow.id), col(RollbackPlanRow.status)
_created_at = col(RollbackPlanRow.created_at)
_step_plan, _step_seq = col(RollbackStepRow.plan_id), col(RollbackStepRow.seq)


class RollbackPlans:
    """``create_plan`` ... ``unfinished_plans`` of ``ports.Store``."""

    _engine: AsyncEngine  # reads
    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite

    async def create_plan(self, plan: Plan) -> None:
        now = utcnow()
        async with AsyncSession(self._writer) as session, session.begin():
            session.add(codec.plan_row(plan, now))
            session.add_all([codec.step_row(plan.id, step, now) for step in plan.steps])

    async def get_plan(self, plan_id: str) -> Plan | None:
        async with AsyncSession(self._engine) as session:
            row = await session.get(RollbackPlanRow, plan_id)
            if row is None:
                return None
            steps = (await session.exec(select(RollbackStepRow)
                                        .where(_step_plan == plan_id)
                                        .order_by(_step_seq))).all()
        return codec.plan_from_rows(row, steps)

    async def list_plans(self, limit: int = 50) -> list[Plan]:
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(select(RollbackPlanRow)
                                       .order_by(_created_at.desc(), _plan_id.desc())
                                       .limit(limit))).all()
            if not rows:
                return []
            steps = (await session.exec(select(RollbackStepRow)
                                        .where(_step_plan.in_([r.id for r in rows]))
                                        .order_by(_step_plan, _step_seq))).all()
        by_plan: defaultdict[str, list[RollbackStepRow]] = defaultdict(list)
        for step in steps:
            by_plan[step.plan_id].append(step)
        return [codec.plan_from_rows(row, by_plan[row.id]) for row in rows]

    async def update_step(self, plan_id: str, seq: int, status: StepStatus,
                          detail: str | None, journal_id: str | None) -> None:
        now = iso(utcnow())
        values: dict[str, Any] = {"status": status.value, "detail": detail, "updated_at": now}
        if journal_id is not None:
            values["journal_id"] = journal_id
        async with self._writer.begin() as connection:
            result = await connection.execute(
                update(RollbackStepRow).where(_step_plan == plan_id, _step_seq == seq)
                .values(**values))
            if result.rowcount != 1:
                raise LookupError(f"no step {seq} in rollback plan {plan_id!r}")
            await _touch(connection, plan_id, now)

    async def set_plan_status(self, plan_id: str, status: PlanStatus) -> None:
        async with self._writer.begin() as connection:
            if not await _touch(connection, plan_id, iso(utcnow()), status=status.value):
                raise LookupError(f"no rollback plan {plan_id!r}")

    async def plans_for_entry(self, entry_id: str) -> list[Plan]:
        """The plans with a step for journal entry ``entry_id``, newest first."""
        statement = select(_step_plan).where(col(RollbackStepRow.entry_id) == entry_id).distinct()
        async with AsyncSession(self._engine) as session:
            ids = list((await session.exec(statement)).all())
        plans = [plan for plan in [await self.get_plan(i) for i in ids] if plan is not None]
        return sorted(plans, key=lambda p: (p.created_at, p.id), reverse=True)

    async def claim_dry_run(self, plan_id: str) -> bool:
        """dry_run -> running, once: True for the one caller that changed it."""
        async with self._writer.begin() as connection:
            result = await connection.execute(
                update(RollbackPlanRow).where(_plan_id == plan_id,
                                              _plan_status == PlanStatus.DRY_RUN.value)
                .values(status=PlanStatus.RUNNING.value, updated_at=iso(utcnow())))
        return bool(result.rowcount == 1)

    async def unfinished_plans(self) -> list[str]:
        statement = (select(_plan_id).where(_plan_status == PlanStatus.RUNNING.value)
                     .order_by(_created_at, _plan_id))
        async with AsyncSession(self._engine) as session:
            return list((await session.exec(statement)).all())


async def _touch(connection: AsyncConnection, plan_id: str, now: str, **values: Any) -> bool:
    """Set the plan's ``updated_at`` (and ``values``); False if there is no such plan."""
    result = await connection.execute(
        update(RollbackPlanRow).where(_plan_id == plan_id).values(updated_at=now, **values))
    return bool(result.rowcount == 1)
