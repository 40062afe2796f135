"""Rollback plans at run time: selecting, planning, running, resuming.

The plan is pure (``gateway.core.rollback``); this service selects the
journal entries, plans over their true (sealed) values, previews a dry run's
conflicts, and runs a plan step by step (each step:
``gateway.services.compensations``), audited. A plan has one executor among
all processes sharing the store, and one interrupted by a crash resumes
without repeating a step that landed. The kill switch does not apply: a
freeze stops agents, not operators' recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.core.body import is_json_type, parse_body
from gateway.core.model import (
    JournalEntry,
    JournalQuery,
    iso,
    new_id,
    utcnow,
)
from gateway.core.rollback import (
    RECONCILE,
    Plan,
    PlanStatus,
    StepStatus,
    drifted,
    expected_after,
    plan_rollback,
    with_status,
)
from gateway.core.seal import Sealer
from gateway.errors import AdminError, GatewayError, SealError
from gateway.ports import RollbackStore
from gateway.services import sealing
from gateway.services.audit_trail import AuditTrail
from gateway.services.call import Policies, Senders
from gateway.services.compensations import Compensations, current
from gateway.services.journal import Journal
from gateway.services.plan_leases import PlanLeases

log = logging.getLogger("gateway.rollback")
PAGE = 5000  # journal entries read at a time; a plan covers every page (no cap)


@dataclass(frozen=True, slots=True)
class Selection:
    entries: tuple[str, ...] | None = None
    agent: str | None = None
    run: str | None = None
    upstream: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"entries": list(self.entries) if self.entries else None, "agent": self.agent,
                "run": self.run, "upstream": self.upstream,
                "since": iso(self.since) if self.since else None,
                "until": iso(self.until) if self.until else None}

    def empty(self) -> bool:
        return not any((self.entries, self.agent, self.run, self.upstream, self.since,
                        self.until))


class Rollbacks:
    """Applies plans. A plan has one executor among all processes sharing the store:
    a lease (``plan:<id>``, ``Store.take_lease``) taken before the plan is run and
    renewed while it runs; a plan whose executor died is resumed by the one process
    that takes its lapsed lease (``resume_unfinished``, run again and again by
    ``gateway.services.recovery``)."""

    def __init__(self, policies: Policies, senders: Senders, store: RollbackStore, journal: Journal,
                 trail: AuditTrail | None = None, owner: str | None = None,
                 lease_seconds: float = 15.0) -> None:
        self.policies = policies
        self.senders = senders
        self.journal = journal  # compensations are journaled like any write
        self.store = store
        self.leases = PlanLeases(store, owner or getattr(store, "process", None) or new_id(),
                                 lease_seconds)
        self._running: set[str] = set()  # plan ids being applied by this process
        self._resumed: set[asyncio.Task[Any]] = set()
        self.trail = trail  # where a record the store refused is queued (None: logged)
        self.steps = Compensations(policies, senders, store, journal)

    async def select(self, selection: Selection) -> list[JournalEntry]:
        if selection.empty():
            raise AdminError(400, "bad_request", "name what to roll back: entries, agent, "
                             "run, upstream or a since/until window")
        query = JournalQuery(agent=selection.agent, upstream=selection.upstream,
                             run=selection.run, since=selection.since, until=selection.until,
                             ids=selection.entries,
                             limit=max(PAGE, len(selection.entries or ())))
        await self.journal.settled()  # the outcomes of writes already answered
        entries: list[JournalEntry] = []
        while True:  # every page: a plan covers all it was asked for
            page = await self.store.list_journal(query)
            entries.extend(page)
            if len(page) < query.limit:
                break
            query = replace(query, after=(page[-1].at, page[-1].id))
        if selection.entries:
            missing = set(selection.entries) - {e.id for e in entries}
            if missing:
                raise AdminError(404, "not_found", f"no journal entries {sorted(missing)}")
            return entries
        return [e for e in entries if e.decision != "rollback"]  # not earlier compensations

    async def start(self, selection: Selection, by: str, dry_run: bool, force: bool) -> Plan:
        entries, refused, responses = self._opened(await self.select(selection))
        plan = plan_rollback(entries, plan_id=new_id(), at=utcnow(), by=by,
                             selector=selection.to_json(), force=force, dry_run=dry_run,
                             parse=lambda e: self._expected(e, responses.get(e.id)),
                             volatile=self._volatile,
                             declared_irreversible=self._declared_irreversible,
                             sent=_sent)
        plan = self._sealed(plan, refused)
        if dry_run:
            plan = await self._predict(plan)
            await self.store.create_plan(plan)
            return plan
        await self._claim(plan.id)  # before it exists as running: nobody else resumes it
        await self.store.create_plan(plan)
        await self._audit(by, "rollback.start", plan, {"steps": len(plan.steps),
                                                       "irreversible": len(plan.irreversible)})
        return await self.run(plan)

    def _opened(self, entries: list[JournalEntry]
                ) -> tuple[list[JournalEntry], dict[str, str], dict[str, Any]]:
        """The entries with their true (sealed) undo and state left; the ids whose sealed
        values cannot be opened, with why (their steps are refused, never sent redacted);
        the true responses by entry id (the expected state, compared for drift)."""
        opened, refused, responses = [], {}, {}
        for entry in entries:
            try:
                true, response = sealing.open_entry(self.sealer, entry)
            except SealError as exc:
                opened.append(entry)
                refused[entry.id] = str(exc)
                continue
            opened.append(true)
            if response is not None:
                responses[entry.id] = response
        return opened, refused, responses

    def _sealed(self, plan: Plan, refused: dict[str, str]) -> Plan:
        """Steps as stored and shown: true bodies sealed, refused ones failed with why."""
        steps = []
        for step in plan.steps:
            why = refused.get(step.entry_id)
            if why is not None and step.status is StepStatus.PLANNED:
                step = with_status(step, StepStatus.FAILED, f"refused: {why}")
            steps.append(sealing.seal_step(self.sealer, step))
        return replace(plan, steps=tuple(steps))

    @property
    def sealer(self) -> Sealer:
        return self.journal.sealer

    async def apply_previewed(self, plan_id: str, by: str) -> Plan:
        """Apply a dry run as it was previewed: its steps, not a new selection.

        Each step's drift is checked again when it is applied (a conflict the
        preview predicted may be gone, or a new one may appear). Once only.
        """
        plan = await self.store.get_plan(plan_id)
        if plan is None:
            raise AdminError(404, "not_found", f"no rollback plan {plan_id}")
        await self._claim(plan_id)
        if not await self.store.claim_dry_run(plan_id):
            await self.leases.release(plan_id)
            raise AdminError(409, "not_a_dry_run", f"rollback plan {plan_id} is "
                             f"{(await self.store.get_plan(plan_id) or plan).status.value}, "
                             "not a dry run waiting to be applied")
        steps = []
        for step in plan.steps:
            if step.status is StepStatus.CONFLICT:  # predicted: judged again when applied
                await self.store.update_step(plan.id, step.seq, StepStatus.PLANNED, None, None)
                step = with_status(step, StepStatus.PLANNED)
            steps.append(step)
        running = Plan(plan.id, plan.created_at, plan.by, plan.selector, plan.force,
                       PlanStatus.RUNNING, tuple(steps), plan.irreversible, plan.skipped)
        await self._audit(by, "rollback.start", running, {
            "steps": len(steps), "irreversible": len(plan.irreversible), "previewed": True})
        return await self.run(running)

    async def resume(self, plan_id: str, by: str) -> Plan:
        plan = await self.store.get_plan(plan_id)
        if plan is None:
            raise AdminError(404, "not_found", f"no rollback plan {plan_id}")
        if plan.status is PlanStatus.DRY_RUN:
            raise AdminError(409, "dry_run", "a dry run is not applied; start a new "
                             "rollback with dry_run: false")
        with self._guard(plan_id):
            await self._claim(plan_id)  # before anything changes: one executor
            plan = await self.store.get_plan(plan_id) or plan  # as its last executor left it
            await self.store.set_plan_status(plan.id, PlanStatus.RUNNING)
            await self._audit(by, "rollback.resume", plan, {})
            return await self._held_run(plan)

    async def resume_unfinished(self) -> None:
        """Finish what a stopped process left running: each plan whose executor's lease
        lapsed (or that never had one) is resumed, in the background, by the one process
        that takes its lease. At start and then again and again (a dead executor's lease
        lapses ``executor_lease`` seconds after it stopped)."""
        for plan_id in await self.store.unfinished_plans():
            if plan_id in self._running or not await self.leases.lapsed(plan_id):
                continue
            task = asyncio.create_task(self._resume_quietly(plan_id))
            self._resumed.add(task)
            task.add_done_callback(self._resumed.discard)

    async def _resume_quietly(self, plan_id: str) -> None:
        try:
            if not await self.leases.take(plan_id):
                return  # another process took it first
            log.warning("resuming rollback plan %s", plan_id)
            await self.resume(plan_id, "gateway")
        except AdminError as exc:
            log.info("rollback plan %s not resumed here: %s", plan_id, exc.message)
        except Exception:
            log.exception("could not resume rollback plan %s", plan_id)

    async def resumed(self) -> None:
        """Until the plans being resumed now are done (or stopped)."""
        await asyncio.gather(*self._resumed, return_exceptions=True)

    async def stop(self) -> None:
        """Stop resumed plans (their leases lapse; another process takes them over)."""
        for task in list(self._resumed):
            task.cancel()
        await asyncio.gather(*self._resumed, return_exceptions=True)

    async def _claim(self, plan_id: str) -> None:
        """This process's lease on the plan, or 409: another process is applying it."""
        if not await self.leases.take(plan_id):
            raise AdminError(409, "running", f"rollback plan {plan_id} is being applied "
                             "by another gateway process")

    @contextlib.contextmanager
    def _guard(self, plan_id: str) -> Iterator[None]:
        """This process applies a plan once at a time (the lease is per process)."""
        if plan_id in self._running:
            raise AdminError(409, "running", f"rollback plan {plan_id} is running")
        self._running.add(plan_id)
        try:
            yield
        finally:
            self._running.discard(plan_id)

    async def run(self, plan: Plan) -> Plan:
        with self._guard(plan.id):
            return await self._held_run(plan)

    async def _held_run(self, plan: Plan) -> Plan:
        await self._claim(plan.id)
        async with self.leases.renewed(plan.id) as lost:
            return await self._run(plan, lost)

    async def _run(self, plan: Plan, lost: asyncio.Event | None = None) -> Plan:
        steps = list(plan.steps)
        compensated: set[tuple[str, str]] = set()  # resources this plan has put back
        for index, step in enumerate(steps):
            if lost is not None and lost.is_set():
                raise AdminError(409, "lease_lost", f"rollback plan {plan.id} was taken "
                                 "over by another gateway process")
            if step.status in (StepStatus.PLANNED, StepStatus.APPLYING):
                steps[index] = await self.steps.apply(plan, step,
                                                 (step.upstream, step.target) in compensated)
            if steps[index].status is StepStatus.APPLIED:
                compensated.add((step.upstream, step.target))
        done = all(s.status in (StepStatus.APPLIED, StepStatus.SKIPPED) for s in steps)
        status = PlanStatus.DONE if done else PlanStatus.INCOMPLETE
        await self.store.set_plan_status(plan.id, status)
        final = Plan(plan.id, plan.created_at, plan.by, plan.selector, plan.force, status,
                     tuple(steps), plan.irreversible, plan.skipped)
        counts = {s.value: sum(1 for x in steps if x.status is s) for s in StepStatus}
        await self._audit(plan.by, "rollback.finish", final, {"status": status.value, **counts})
        return final

    def _expected(self, entry: JournalEntry, true_response: Any = None) -> Any:
        content_type = entry.response_headers.get("content-type")
        parsed = parse_body((entry.response_body or "").encode(), content_type) \
            if is_json_type(content_type) else None
        if true_response is not None:  # sealed: the response before redaction
            parsed = true_response
        return expected_after(entry, parsed, getattr(entry, "after", None))

    def _declared_irreversible(self, entry: JournalEntry) -> bool:
        upstream = self.policies.upstream(entry.upstream)
        rule = upstream.rule(entry.rule) if upstream is not None else None
        return rule is not None and rule.undo == "none"

    def _volatile(self, entry: JournalEntry) -> tuple[str, ...]:
        upstream = self.policies.upstream(entry.upstream)
        if upstream is None:
            return ()
        rule = upstream.rule(entry.rule)
        return upstream.spec.volatile + (rule.volatile if rule is not None else ())

    async def _predict(self, plan: Plan) -> Plan:
        """A dry run reads each resource's newest step's target, to show conflicts now."""
        seen_targets: set[tuple[str, str]] = set()
        steps = []
        for step in plan.steps:
            key = (step.upstream, step.target)
            upstream = self.policies.upstream(step.upstream)
            if step.status is not StepStatus.PLANNED or key in seen_targets or upstream is None \
                    or plan.force or step.detail == RECONCILE:  # judged when applied
                steps.append(step)
                continue
            seen_targets.add(key)
            try:
                opened = sealing.open_step(self.sealer, step)
                seen = await self.steps.observe(upstream, step.target)
                why = drifted(opened, seen.status, current(opened, seen))
            except SealError as exc:
                steps.append(with_status(step, StepStatus.FAILED, f"refused: {exc}"))
                continue
            except GatewayError as exc:
                why = f"reading failed: {exc.message}"
            steps.append(with_status(step, StepStatus.CONFLICT, why) if why else step)
        return Plan(plan.id, plan.created_at, plan.by, plan.selector, plan.force, plan.status,
                    tuple(steps), plan.irreversible, plan.skipped)

    async def _audit(self, actor: str, action: str, plan: Plan, detail: dict[str, Any]) -> None:
        record = {"plan": plan.id, "selector": plan.selector, **detail}
        try:
            await self.store.append_audit(actor, action, record, utcnow())
        except Exception:  # queued when there is a trail: it retries until the store is back
            log.exception("could not audit %s of plan %s", action, plan.id)
            if self.trail is not None:
                await self.trail.record(actor, action, record)


def _sent(entry: JournalEntry) -> Any:
    """The request body as journaled, parsed (what an unknown write would have left)."""
    if entry.request_body is None:
        return None
    return parse_body(entry.request_body.encode(), entry.request_content_type)
