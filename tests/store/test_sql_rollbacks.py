"""Rollback plans on every backend: exact round-trips, step progress, resuming after a restart."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.core.rollback import ABSENT, Plan, PlanStatus, Step, StepStatus
from gateway.store.sql import SqlStore

T0 = datetime(2024, 5, 4, 9, 30, 0, 500001, tzinfo=UTC)
RUNNING = PlanStatus.RUNNING


def step(seq: int, **changes: Any) -> Step:
    values: dict[str, Any] = dict(
        seq=seq, entry_id=f"{seq:032x}", upstream="crm", method="PUT",
        path=f"/customers/{seq}", body={"name": "Zoë 🚀", "tags": [1, 2.5, None, True]},
        content_type="application/json", target=f"/customers/{seq}",
        expected={"name": "Zoé", "updated_at": "2024-05-01"}, volatile=("updated_at", "etag"))
    values.update(changes)
    return Step(**values)


def plan(n: int = 0, steps: tuple[Step, ...] | None = None, **changes: Any) -> Plan:
    """Plan ``n``, created ``n`` seconds after T0, id ``plan-n``."""
    values: dict[str, Any] = dict(
        id=f"plan-{n}", created_at=T0 + timedelta(seconds=n), by="alice",
        selector={"run": "run-1", "agent": "support-bot", "ids": ["a", "b"]}, force=False,
        status=RUNNING, steps=(step(0), step(1)) if steps is None else steps)
    values.update(changes)
    return Plan(**values)


EVERY_KIND = (
    step(0, body={"name": "Zoë", "n": None}),
    step(1, body=["a", 1, None, {"k": "ü"}], method="POST", expected=ABSENT, volatile=()),
    step(2, body="name=Zo%C3%AB&x=1", content_type="application/x-www-form-urlencoded",
         expected=None),
    step(3, body=None, method="DELETE", expected={}, status=StepStatus.APPLIED,
         detail="compensated ✓", journal_id="j" * 32),
    step(4, body={}, expected=[1, 2], status=StepStatus.CONFLICT,
         detail="changed since the agent's write: name"),
    step(5, body=[], expected="text", status=StepStatus.APPLYING, detail=""),
)


async def test_every_field_round_trips(store: SqlStore) -> None:
    irreversible = ({"entry": "e1", "reason": "marked irreversible", "prior": None,
                     "status": 201, "request_body": '{"a": "日本語"}'},)
    skipped = ({"entry": "e2", "reason": "the write failed (500); nothing to undo"}, {})
    written = plan(1, EVERY_KIND, force=True, status=PlanStatus.INCOMPLETE,
                   irreversible=irreversible, skipped=skipped, selector={})
    await store.create_plan(written)
    got = await store.get_plan(written.id)
    assert got == written
    assert await store.list_plans() == [written]
    assert got is not None
    assert isinstance(got.steps, tuple) and isinstance(got.irreversible, tuple)
    assert isinstance(got.skipped, tuple)
    assert got.status is PlanStatus.INCOMPLETE and got.force is True
    for read, wrote in zip(got.steps, written.steps, strict=True):
        assert type(read.body) is type(wrote.body) and type(read.expected) is type(wrote.expected)
        assert read.status is wrote.status and isinstance(read.volatile, tuple)
    assert got.steps[1].expected == ABSENT and got.steps[2].expected is None


async def test_a_plan_without_steps_and_a_missing_one(store: SqlStore) -> None:
    empty = plan(1, (), status=PlanStatus.DRY_RUN)
    await store.create_plan(empty)
    assert await store.get_plan(empty.id) == empty
    assert await store.get_plan("missing") is None


async def test_steps_come_back_in_seq_order(store: SqlStore) -> None:
    written = plan(1, tuple(step(n) for n in range(12)))
    await store.create_plan(dataclasses.replace(written, steps=written.steps[::-1]))
    got = await store.get_plan(written.id)
    assert got == written


async def test_a_plan_is_written_whole_or_not_at_all(store: SqlStore) -> None:
    await store.create_plan(plan(1))
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await store.create_plan(plan(1, (step(7),), by="bob"))
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await store.create_plan(plan(2, (step(0), step(0, path="/twice"))))
    assert await store.list_plans() == [plan(1)]


async def test_list_is_newest_first_and_limited(store: SqlStore) -> None:
    plans = [plan(0), plan(1, (step(0, entry_id="x"),)), plan(2, ()),
             plan(3, (step(0), step(1), step(2))), plan(4, created_at=plan(3).created_at)]
    for written in plans:
        await store.create_plan(written)
    assert await store.list_plans() == plans[::-1]
    assert await store.list_plans(limit=2) == [plans[4], plans[3]]
    assert await store.list_plans(limit=0) == []


async def test_update_step_records_progress(store: SqlStore) -> None:
    written = plan(1, (step(0), step(1), step(2)))
    await store.create_plan(written)
    await store.update_step(written.id, 1, StepStatus.APPLYING, None, "j1")
    await store.update_step(written.id, 1, StepStatus.APPLIED, "sent ✓", None)  # keeps j1
    await store.update_step(written.id, 0, StepStatus.CONFLICT, "changed: name", None)
    await store.update_step(written.id, 2, StepStatus.FAILED, "502", "j2")
    await store.update_step(written.id, 2, StepStatus.APPLIED, None, "j3")  # detail cleared
    got = await store.get_plan(written.id)
    assert got is not None
    assert [(s.status, s.detail, s.journal_id) for s in got.steps] == [
        (StepStatus.CONFLICT, "changed: name", None),
        (StepStatus.APPLIED, "sent ✓", "j1"),
        (StepStatus.APPLIED, None, "j3"),
    ]
    assert got == dataclasses.replace(written, steps=got.steps)  # nothing else changed
    assert [dataclasses.replace(s, status=StepStatus.PLANNED, detail=None, journal_id=None)
            for s in got.steps] == list(written.steps)


async def test_update_of_a_missing_step_raises(store: SqlStore) -> None:
    await store.create_plan(plan(1))
    with pytest.raises(LookupError):
        await store.update_step(plan(1).id, 9, StepStatus.APPLIED, None, None)
    with pytest.raises(LookupError):
        await store.update_step("missing", 0, StepStatus.APPLIED, None, None)
    with pytest.raises(LookupError):
        await store.set_plan_status("missing", PlanStatus.DONE)
    assert await store.get_plan(plan(1).id) == plan(1)


async def test_plan_status_and_unfinished_plans(store: SqlStore) -> None:
    for written in [plan(3), plan(0, status=PlanStatus.DRY_RUN), plan(1), plan(2),
                    plan(4, status=PlanStatus.DONE), plan(5, status=PlanStatus.INCOMPLETE)]:
        await store.create_plan(written)
    assert await store.unfinished_plans() == ["plan-1", "plan-2", "plan-3"]
    await store.set_plan_status("plan-2", PlanStatus.DONE)
    await store.set_plan_status("plan-5", PlanStatus.RUNNING)
    assert await store.unfinished_plans() == ["plan-1", "plan-3", "plan-5"]
    await store.set_plan_status("plan-1", PlanStatus.INCOMPLETE)
    got = await store.get_plan("plan-1")
    assert got == plan(1, status=PlanStatus.INCOMPLETE) and got is not None
    assert got.status is PlanStatus.INCOMPLETE
    assert await store.unfinished_plans() == ["plan-3", "plan-5"]


async def test_restart_keeps_plans(store_url: str) -> None:
    first = SqlStore(store_url)
    await first.start()
    plans = [plan(0, EVERY_KIND), plan(1, status=PlanStatus.DONE)]
    for written in plans:
        await first.create_plan(written)
    await first.update_step(plans[0].id, 0, StepStatus.APPLYING, None, "j0")
    await first.close()

    second = SqlStore(store_url)
    await second.start()
    try:
        assert await second.unfinished_plans() == [plans[0].id]
        resumed = await second.get_plan(plans[0].id)
        assert resumed is not None
        assert resumed.steps[0] == dataclasses.replace(EVERY_KIND[0], status=StepStatus.APPLYING,
                                                       journal_id="j0")
        assert resumed.steps[1:] == EVERY_KIND[1:]
        assert await second.list_plans() == [plans[1], resumed]
    finally:
        await second.close()
