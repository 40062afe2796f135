"""One step of a rollback plan applied: drift check, compensation, journal.

Each step reads its target resource (through the upstream's sender), compares
it with what the agent's write left (an unknown write is reconciled: the
resource says whether it landed), sends the compensation (with ``If-Match``
when the upstream gave an ETag; a 412 is a conflict), and journals it like
any write. Its state is persisted before and after the send, so a plan
resumed after a crash finds a compensation that landed instead of repeating
it. Running whole plans is ``gateway.services.rollbacks``'.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.core.body import encode
from gateway.core.model import Checkpoint, JournalEntry, new_id, utcnow
from gateway.core.policy.compiled import Upstream
from gateway.core.rollback import (
    Plan,
    Step,
    StepStatus,
    already_compensated,
    drifted,
    outcome_unknown,
    reconcile,
    with_status,
)
from gateway.core.seal import Sealer
from gateway.errors import GatewayError, SealError
from gateway.ports import Observed, RollbackStore, UpstreamResponse
from gateway.services import sealing
from gateway.services.call import Policies, Senders
from gateway.services.journal import Journal

log = logging.getLogger("gateway.rollback")


class Compensations:
    def __init__(self, policies: Policies, senders: Senders, store: RollbackStore,
                 journal: Journal) -> None:
        self.policies = policies
        self.senders = senders
        self.store = store
        self.journal = journal  # compensations are journaled like any write

    @property
    def sealer(self) -> Sealer:
        return self.journal.sealer

    async def apply(self, plan: Plan, shown: Step, follows: bool = False) -> Step:
        """``follows``: a newer write to the same resource was compensated by this plan
        just before (its drift checked then), so the resource holds what that
        compensation left, not byte for byte what this write left (a form API unsets a
        key as ""): no drift check, as the dry run checks only the newest step."""
        upstream = self.policies.upstream(shown.upstream)
        if upstream is None:
            return await self._save(plan, shown, StepStatus.FAILED,
                                    f"upstream {shown.upstream!r} is no longer configured")
        try:
            step = sealing.open_step(self.sealer, shown)
        except SealError as exc:  # fail closed: never send the redacted state instead
            return await self._save(plan, shown, StepStatus.FAILED, f"refused: {exc}")
        try:
            seen = await self.observe(upstream, step.target)
        except GatewayError as exc:
            return await self._save(plan, step, StepStatus.FAILED, f"reading failed: {exc.message}")
        try:
            unknown = await self._unknown(step)
        except SealError as exc:
            return await self._save(plan, step, StepStatus.FAILED, f"refused: {exc}")
        if unknown is not None:  # it may or may not have landed: the resource says which
            absent = unknown.prior_status in (404, 410) or (  # a create: nothing before
                unknown.method == "POST" and unknown.capture_path is None)
            verdict, why = reconcile(step, unknown.method, unknown.prior, absent, seen.status,
                                     current(step, seen))
            if verdict is StepStatus.SKIPPED or (verdict is StepStatus.CONFLICT
                                                 and not plan.force):
                return await self._save(plan, step, verdict, why)
        else:  # (an unknown write's reconciliation above was its drift check)
            if step.status is StepStatus.APPLYING:  # interrupted: did the compensation land?
                entry = await self.store.get_journal(step.entry_id)
                prior = entry.prior if entry is not None else None
                if already_compensated(step, seen.status, seen.value, prior):
                    return await self._applied(plan, step, "found applied when the plan resumed")
            if not plan.force and not follows:  # resumed too: it may have changed meanwhile
                why = drifted(step, seen.status, current(step, seen))
                if why is not None:
                    return await self._save(plan, step, StepStatus.CONFLICT, why)
        await self.store.update_step(plan.id, step.seq, StepStatus.APPLYING, None, None)
        try:
            response, journal_id = await self._compensate(upstream, plan, step, seen)
        except GatewayError as exc:
            return await self._save(plan, step, StepStatus.FAILED, exc.message)
        status = response.status
        failed = self.senders(upstream).answer(  # a tool's, in a 200
            step.method, response.body or b"", dict(response.headers).get("content-type"),
            step.body).failed
        if failed is not None:
            return await self._save(plan, step, StepStatus.FAILED, failed, journal_id)
        if status == 412:
            return await self._save(plan, step, StepStatus.CONFLICT,
                                    "changed since it was read (412 on If-Match)", journal_id)
        if not 200 <= status < 300:
            return await self._save(plan, step, StepStatus.FAILED,
                                    f"the compensation answered {status}", journal_id)
        return await self._applied(plan, step, None, journal_id)

    async def _unknown(self, step: Step) -> JournalEntry | None:
        """The (opened) journal entry of a planned step whose write's outcome is unknown,
        or None (the journal is the source of truth: a plan's steps are stored without)."""
        if step.status is not StepStatus.PLANNED:
            return None
        entry = await self.store.get_journal(step.entry_id)
        if entry is None or not outcome_unknown(entry):
            return None
        opened, _ = sealing.open_entry(self.sealer, entry)  # SealError: refused by the caller
        return opened

    async def _applied(self, plan: Plan, step: Step, detail: str | None,
                       journal_id: str | None = None) -> Step:
        """The step landed: its journal entry becomes ``rolled_back`` (with this plan),
        so a later rollback skips it instead of finding the restored state "drifted"."""
        saved = await self._save(plan, step, StepStatus.APPLIED, detail, journal_id)
        try:
            await self.store.mark_rolled_back(step.entry_id, plan.id, utcnow())
        except Exception:  # the compensation landed; a later plan would show a conflict
            log.exception("could not mark journal entry %s rolled back", step.entry_id)
        return saved

    async def _save(self, plan: Plan, step: Step, status: StepStatus, detail: str | None,
                    journal_id: str | None = None) -> Step:
        await self.store.update_step(plan.id, step.seq, status, detail, journal_id)
        shown = sealing.seal_step(self.sealer, step) if step.sealed is not None else step
        return with_status(shown, status, detail, journal_id)

    async def observe(self, upstream: Upstream, path: str) -> Observed:
        return await self.senders(upstream).read(upstream, path)

    async def _compensate(self, upstream: Upstream, plan: Plan, step: Step,
                          seen: Observed) -> tuple[UpstreamResponse, str]:
        sender = self.senders(upstream)
        body = sealing.body_bytes(step.body)  # a text or binary prior, byte for byte
        if body is None:
            body = encode(step.body, step.content_type)
        headers = sender.own_headers(upstream, step.content_type if body else None)
        headers += sealing.body_headers(step.body)  # an S3 object's metadata, put back with it
        if seen.etag and step.method != "POST":  # (a tool's read has no ETag)
            headers.append(("if-match", seen.etag))
        entry_id = new_id()
        keyed = upstream.idempotency_header(None)  # a compensation is a write too
        if keyed is not None:
            headers.append((keyed, entry_id))
        entry = self.journal.entry(
            entry_id=entry_id, request_id=new_id(), agent=f"operator:{plan.by}",
            checkpoint=Checkpoint(run=f"rollback:{plan.id}"), upstream=upstream.name,
            method=step.method, path=step.path, query="", rule=f"rollback:{plan.id}",
            decision="rollback", policy_revision=self.policies.current.revision,
            headers=headers, body=body or b"", content_type=step.content_type,
            prior=seen.value, prior_status=seen.status, capture_path=step.target, undo=None,
            reversible=False)
        await self.journal.compensation_intent(entry)  # recovery is not frozen
        started = time.perf_counter()
        response = None
        try:
            response = await sender.compensate(upstream, step, headers, body)
        except GatewayError as exc:
            await self.journal.record_outcome(entry, sender, None, exc, started)
            raise
        await self.journal.record_outcome(entry, sender, response, None, started, step.body)
        return response, entry.id


def current(step: Step, seen: Observed) -> Any:
    """The resource now, as the step's expected state is: true when that was sealed, or a
    digest for a text or binary resource; else as journaled (redacted)."""
    true = sealing.true_state(seen)
    if step.sealed is not None or not isinstance(seen.value, (dict, list)):
        return true
    return seen.value
