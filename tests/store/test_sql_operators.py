"""What the operators' dashboard reads, on every backend: runs, journal search, an entry's
audit trail and rollback plans, applying a previewed plan once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

from gateway.core.model import (
    Checkpoint,
    JournalEntry,
    JournalOutcome,
    JournalQuery,
    JournalState,
)
from gateway.core.rollback import PlanStatus
from gateway.store.sql import SqlStore
from tests.store.conftest import T0
from tests.store.test_sql_rollbacks import plan, step

EntryFactory = Callable[..., JournalEntry]


async def write(store: SqlStore, entry: JournalEntry, outcome: JournalOutcome,
                status: int | None = 200) -> None:
    await store.journal_intent(entry)
    if status is not None:
        await store.journal_outcome(entry.id, dataclasses.replace(
            outcome, status=status, reversible=entry.reversible))


async def test_runs_summarise_each_agents_runs_newest_first(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    await write(store, make_entry(1), outcome)
    await write(store, make_entry(2, reversible=False, upstream="billing"), outcome)
    await write(store, make_entry(3), outcome, status=500)
    await write(store, make_entry(4, checkpoint=Checkpoint(run="run-2")), outcome)
    await write(store, make_entry(5, agent="other", checkpoint=Checkpoint()), outcome,
                status=None)
    await write(store, make_entry(6, decision="rollback", checkpoint=Checkpoint(
        run="rollback:p")), outcome)  # an operator's compensation is no agent run
    assert await store.mark_rolled_back(make_entry(1).id, "plan-a", T0)

    runs = await store.list_runs(JournalQuery())
    assert [(r.agent, r.run) for r in runs] == [("other", None), ("support-bot", "run-2"),
                                                ("support-bot", "run-1")]
    run1 = runs[2]
    assert (run1.first_at, run1.last_at) == (T0 + timedelta(seconds=1), T0 + timedelta(seconds=3))
    assert (run1.writes, run1.reversible, run1.rolled_back, run1.failed) == (3, 2, 1, 1)
    assert run1.upstreams == ("billing", "crm")
    assert run1.to_json()["irreversible"] == 1
    assert runs[0].failed == 1  # never answered
    assert [r.run for r in await store.list_runs(JournalQuery(agent="support-bot",
                                                              limit=1))] == ["run-2"]
    assert [r.run for r in await store.list_runs(JournalQuery(upstream="billing"))] == ["run-1"]
    assert await store.list_runs(JournalQuery(since=T0 + timedelta(seconds=10))) == []


async def test_a_runs_shadowed_writes_are_counted_apart_never_as_irreversible_or_failed(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    await write(store, make_entry(1, checkpoint=Checkpoint(run="trial")), outcome)
    for n in (2, 3):  # proposed by a mode: shadow run: journaled, never sent
        await store.journal_intent(make_entry(
            n, checkpoint=Checkpoint(run="trial"), mode="shadow", decision="shadow",
            state=JournalState.SHADOW, status=200, reversible=False))
    [run] = await store.list_runs(JournalQuery(run="trial"))
    assert (run.writes, run.reversible, run.failed, run.shadowed) == (1, 1, 0, 2)
    assert run.to_json()["irreversible"] == 0 and run.to_json()["shadowed"] == 2


async def test_journal_search_filters(store: SqlStore, make_entry: EntryFactory,
                                      outcome: JournalOutcome) -> None:
    await write(store, make_entry(1, method="DELETE", path="/deals/100%_off"), outcome)
    await write(store, make_entry(2, decision="hold"), outcome)
    await write(store, make_entry(3), outcome, status=None)

    def ids(entries: list[JournalEntry]) -> list[str]:
        return [e.id for e in entries]

    assert ids(await store.list_journal(JournalQuery(method="DELETE"))) == [make_entry(1).id]
    assert ids(await store.list_journal(JournalQuery(path="100%_"))) == [make_entry(1).id]
    assert ids(await store.list_journal(JournalQuery(path="%"))) == [make_entry(1).id]  # literal
    assert ids(await store.list_journal(JournalQuery(decision="hold"))) == [make_entry(2).id]
    assert ids(await store.list_journal(JournalQuery(state=JournalState.INTENT.value))) == \
        [make_entry(3).id]


async def test_find_audit_by_the_ids_a_record_names(store: SqlStore) -> None:
    await store.append_audit("bot", "call.allow", {"journal": "e1", "request_id": "r1"}, T0)
    await store.append_audit("alice", "rollback.start", {"plan": "p1"}, T0)
    await store.append_audit("bot", "call.allow", {"journal": "e10"}, T0)
    found = await store.find_audit(["e1", "p1"])
    assert [(r.seq, r.action) for r in found] == [(1, "call.allow"), (2, "rollback.start")]
    assert await store.find_audit([]) == []


async def test_plans_for_an_entry_and_applying_a_dry_run_once(store: SqlStore) -> None:
    dry = plan(1, status=PlanStatus.DRY_RUN, steps=(step(0, entry_id="e1"),))
    other = plan(2, steps=(step(0, entry_id="e2"), step(1, entry_id="e1")))
    await store.create_plan(dry)
    await store.create_plan(other)
    assert [p.id for p in await store.plans_for_entry("e1")] == ["plan-2", "plan-1"]
    assert await store.plans_for_entry("nope") == []
    assert await store.claim_dry_run("plan-1") is True
    assert await store.claim_dry_run("plan-1") is False  # once
    assert await store.claim_dry_run("plan-2") is False  # not a dry run
    claimed = await store.get_plan("plan-1")
    assert claimed is not None and claimed.status is PlanStatus.RUNNING
