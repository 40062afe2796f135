"""The approval queue at run time: holding calls, waiting agents, operators' decisions.

The state machine lives in ``gateway.core.approvals``, a held call as kept,
shown and audited in ``gateway.services.held_calls``; this module persists
each transition (compare-and-set in the store, so one process wins any race)
and holds the agent while it waits (``gateway.services.waiters``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from gateway.core.approvals import (
    ApprovalStatus,
    HeldCall,
    agent_status,
    audit_item,
    check_rejectable,
    digest_of,
    lease,
    public_view,
    redacted_response,
    sent_secrets,
    vote,
)
from gateway.core.killswitch import covering
from gateway.core.model import AuditItem, Decision, iso, utcnow
from gateway.core.policy.compiled import Upstream
from gateway.core.policy.schema import Approval
from gateway.deadline import cancelled, within
from gateway.errors import (
    AdminError,
    AgentGone,
    ApprovalRefused,
    CaptureFailed,
    GatewayError,
    JournalUnavailable,
    UpstreamLost,
    UpstreamTimeout,
    WriteCutOff,
    WritesFrozen,
)
from gateway.ports import ApprovalStore
from gateway.services.call import Call, Policies, Reply, Senders
from gateway.services.finishes import Finishes
from gateway.services.held_calls import (
    agent_reply,
    held_call,
    proposed,
    stored_response,
)
from gateway.services.killswitch import FreezeState
from gateway.services.notify import Notifier
from gateway.services.waiters import Waiters, prefer_wait
from gateway.settings import Settings

log = logging.getLogger("gateway.approvals")
_SWEEP = 1.0  # seconds between sweeps: expiries, lapsed claims, due delayed calls
DELAY_ACTOR = "gateway"  # who claims a delayed call when it falls due
_RETRYABLE = (WritesFrozen, CaptureFailed, JournalUnavailable)  # nothing was sent
_DUE_ATTEMPTS = 3  # a due delayed call that failed unsent this often waits for an operator
# Sent, then no answer: cut off by the kill switch in flight, or timed out waiting.
_MAYBE_SENT = (WriteCutOff, UpstreamTimeout, UpstreamLost)


_REFUSED_STATUS = {"already_decided": 409, "already_voted": 409, "digest_mismatch": 409,
                   "forbidden": 403, "self_approval": 403}


Execute = Callable[[HeldCall, dict[str, Any]], Awaitable[Reply]]


class Execution:
    """How the queue runs an approved call: the pipeline's ``execute_held``. The pipeline
    holds calls in this very queue, so the queue is built first and this is bound once,
    when the pipeline is (``gateway.app``); until then an approval cannot run."""

    def __init__(self) -> None:
        self._execute: Execute | None = None

    def bind(self, execute: Execute) -> None:
        assert self._execute is None, "bound once"
        self._execute = execute

    async def __call__(self, held: HeldCall, approval: dict[str, Any]) -> Reply:
        assert self._execute is not None, "Execution.bind() first"
        return await self._execute(held, approval)


class ApprovalQueue:
    """``execute`` sends an approved call (``Pipeline.execute_held``). Each change of a
    held call carries its audit record to the store (``audit_item``): both or neither."""

    def __init__(self, settings: Settings, policies: Policies, senders: Senders,
                 freezes: FreezeState, store: ApprovalStore, notifier: Notifier, execute: Execute,
                 max_wait: float, lease_seconds: float) -> None:
        self.settings = settings
        self.policies = policies
        self.senders = senders
        self.freezes = freezes
        self.execute = execute
        self.store = store
        self.notifier = notifier
        self.max_wait = max_wait
        self.lease_seconds = lease_seconds
        self.waiters = Waiters(store)
        self._sweeper: asyncio.Task[None] | None = None
        self._due = asyncio.Event()  # a delayed call was queued in this process
        self._dues: list[datetime] = []  # due times queued here (a heap), not yet swept
        self._due_failures: dict[str, int] = {}  # delayed call id -> failed runs, unsent
        self._swept_at: datetime | None = None  # when the last run of due calls looked
        self.finishes = Finishes(store, notifier, self.waiters.wake)

    # -- agent side ------------------------------------------------------------

    async def create(self, held: HeldCall, record: AuditItem | None = None) -> None:
        try:
            await self.store.create_held(held, record)
        except Exception as exc:
            log.error("could not hold %s: %s", held.id, exc)
            raise JournalUnavailable("the approval queue could not be written; "
                                     "the call was not sent") from exc

    async def hold(self, upstream: Upstream, call: Call, decision: Decision,
                   delay: float | None = None) -> Reply:
        """Queue the call; with ``delay`` (``action: delay``) it runs by itself that many
        seconds from now, unless rejected first (``sweep`` runs it)."""
        rule = upstream.rule(decision.rule)
        spec = rule.approval if rule is not None and rule.approval is not None else Approval()
        held = held_call(upstream, call, decision, spec)
        if delay is not None:
            held = replace(held, due_at=held.at + timedelta(seconds=delay),
                           extra={"delay": delay})
        rejoined, key = await self.waiters.rejoin(upstream, call.headers, held)
        if rejoined is not None:  # a resend of a call its agent left unanswered
            held = rejoined
        elif delay is None:
            await self.create(held, audit_item(call.agent, "approval.held", held,
                                               {"rule": decision.rule}))
            self.notifier.publish("approval.held", public_view(held))
        else:
            await self.create(held, audit_item(call.agent, "approval.delayed", held, {
                "rule": decision.rule, "delay": delay, "due_at": iso(held.due_at or held.at)}))
            self.notifier.publish("approval.delayed", public_view(held))
            heapq.heappush(self._dues, held.due_at or held.at)
            self._due.set()  # the sweeper sleeps until the earliest due call it knows of
        asked = prefer_wait(call.headers)
        wait = min(asked if asked is not None else spec.wait, self.max_wait)
        final = await self.waiters.wait(held, wait, key, call.link) if wait > 0 else held
        if final is None:
            raise AgentGone("the agent closed its connection while its call was held; the "
                            "call stays held, and the agent's resend of it rejoins it")
        error = delay is None and spec.answer == "error"
        if error and not final.status.terminal:  # 409 approval_pending: SDKs retry it
            await self.waiters.answered_pending(final, key)
        return agent_reply(final, error=error)

    async def agent_view(self, method: str, rest: str, agent: str) -> tuple[int, Any]:
        """``GET /_gateway/approvals/{id}``: only the agent that sent the call sees it."""
        call_id = rest.removeprefix("approvals/")
        held = await self.store.get_held(call_id) if rest.startswith("approvals/") else None
        if method != "GET" or held is None or held.agent != agent \
                or held.status is ApprovalStatus.SHADOW:  # never given to the agent
            return 404, {"error": {"code": "not_found", "message": "no such approval"}}
        held = await self._expire_if_due(held)
        response = held.response if held.status is ApprovalStatus.EXECUTED else None
        return 200, {"id": held.id, "status": agent_status(held.status), "response": response}

    # -- operator side ---------------------------------------------------------

    async def get(self, call_id: str) -> HeldCall:
        held = await self.store.get_held(call_id)
        if held is None:
            raise AdminError(404, "not_found", f"no approval {call_id}")
        return await self._expire_if_due(held)

    async def show(self, call_id: str) -> dict[str, Any]:
        """The held call, the target's current state, and the change field by field."""
        held = await self.get(call_id)
        view = public_view(held)
        upstream = self.policies.upstream(held.upstream)
        shown = await proposed(held, upstream, self.senders(upstream) if upstream else None)
        view.update(current=shown.current, changes=shown.changes)
        if shown.problem:
            view["capture_error"] = shown.problem
        return view

    async def approve(self, call_id: str, operator: str, role: str, comment: str | None,
                      digest: str | None) -> dict[str, Any]:
        held = await self.get(call_id)
        now = utcnow()
        try:
            outcome = vote(held, operator, role, now, comment, digest)
        except ApprovalRefused as exc:
            raise AdminError(_REFUSED_STATUS[exc.code], exc.code, exc.message) from None
        self._raise_if_frozen(held, await self.store.active_freezes())
        if not outcome.ready:
            if not await self.store.record_votes(
                    held.id, held.votes, outcome.call.votes,
                    audit_item(operator, "approval.vote", held, {"comment": comment})):
                raise AdminError(409, "conflict", "the approval changed meanwhile; retry")
            return {**public_view(outcome.call), "response": None}
        until = lease(now, self.lease_for(held))
        claimed = await self.store.claim_held(
            held.id, held.votes, outcome.call.votes, operator, now, until,
            audit_item(operator, "approval.approve", held, {"comment": comment}))
        if not claimed:
            latest = await self.get(call_id)
            raise AdminError(409, "already_decided",
                                f"approval {call_id} is {latest.status.value}")
        return await self._execute(replace(outcome.call, lease_until=until), operator, comment)

    async def _execute(self, held: HeldCall, operator: str, comment: str | None) -> dict[str, Any]:
        info = {"id": held.id, "approved_by": [v.to_json() for v in held.votes],
                "comment": comment}
        if held.kind != "hold":  # delay: run when due; shadow: a promoted shadow write
            info["kind"] = held.kind
        if held.extra.get("sealed_error"):  # its exact request cannot be opened: not sent,
            # and still pending (with the right key, another process can run it); the vote
            # that would have sent it is taken back
            why = f"the held call's sealed request cannot be opened: {held.extra['sealed_error']}"
            await self.store.release_claim(held.id, tuple(
                v for v in held.votes if v.by != operator))
            self.waiters.wake(held.id)
            raise AdminError(409, "sealed_unavailable", why + "; not sent, still pending")
        if digest_of(held) != held.digest:  # the stored call was altered after it was held
            await self.finishes(held, ApprovalStatus.FAILED, None, None,
                                "the stored call no longer matches its digest; not sent")
            raise AdminError(409, "digest_mismatch", "the held call was altered; not sent")
        try:
            reply = await self.execute(held, info)
        except _MAYBE_SENT as exc:  # it may have landed: never sent again, never "failed"
            await self.finishes(held, ApprovalStatus.UNKNOWN, None, exc.extra.get("journal"),
                                f"{exc.code}: {exc.message}; the outcome is unknown")
            raise AdminError(exc.status, exc.code, exc.message) from None
        except _RETRYABLE as exc:  # nothing reached the upstream: back in the queue, and the
            # vote that set it off is withdrawn, so its approver can approve it again
            kept = tuple(v for v in held.votes if v.by != operator)
            withdrawn = None if len(kept) == len(held.votes) else audit_item(
                operator, "approval.vote_withdrawn", held,
                {"error": f"{exc.code}: {exc.message}; nothing was sent"})
            await self.store.release_claim(held.id, kept, withdrawn)
            self.waiters.wake(held.id)
            raise AdminError(exc.status, exc.code, exc.message) from None
        except GatewayError as exc:
            await self.finishes(held, ApprovalStatus.FAILED, None, exc.extra.get("journal"),
                                f"{exc.code}: {exc.message}")
            raise AdminError(exc.status, exc.code, exc.message) from None
        response = stored_response(reply.response)
        final = await self.finishes(held, ApprovalStatus.EXECUTED, response, reply.journal_id,
                                    None)
        if final is None:  # the answer is kept, its save retried while the claim is ours
            raise AdminError(503, "store_unavailable", (
                f"the call was sent and answered {response['status']}, but the store is "
                "unavailable: the answer is kept and saved once it is back (until "
                f"{iso(held.lease_until) if held.lease_until else 'now'}, then the call is "
                "unknown); read the approval again"), id=held.id)
        return {**public_view(final), "response": redacted_response(response,
                                                                     sent_secrets(held))}

    def lease_for(self, held: HeldCall) -> float:
        """Seconds an execution may take before the sweeper calls it unknown: never less
        than its upstream's (or rule's) ``timeout``, plus the capture before it and the
        read after it, with a margin of twice ``executor_lease``: as long as a dead
        process's heartbeat takes to lapse, twice (30 s by default)."""
        settings = self.settings
        upstream = self.policies.upstream(held.upstream)
        timeouts = [settings.upstream_timeout]
        if upstream is not None:
            rule = upstream.rule(held.rule)
            timeouts += [upstream.spec.timeout or 0, getattr(rule, "timeout", None) or 0]
        return max(self.lease_seconds, max(timeouts) + 2 * settings.capture_timeout
                   + 2 * settings.executor_lease)

    async def reject(self, call_id: str, operator: str, reason: str | None) -> dict[str, Any]:
        held = await self.get(call_id)
        now = utcnow()
        try:
            check_rejectable(held, now)
        except ApprovalRefused as exc:
            raise AdminError(409, exc.code, exc.message) from None
        if not await self.store.reject_held(held.id, operator, reason, now, audit_item(
                operator, "approval.reject", held, {"reason": reason})):
            latest = await self.get(call_id)
            raise AdminError(409, "already_decided",
                                f"approval {call_id} is {latest.status.value}")
        self.waiters.wake(held.id)
        final = await self.get(call_id)
        self.notifier.publish("approval.rejected", public_view(final))
        return {**public_view(final), "response": None}

    # -- housekeeping ----------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self, timeout: float = 10.0) -> None:
        """The sweeper stopped, then up to ``timeout`` seconds for the saves of answers in
        hand (``Finishes.settled``)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.finishes.settled(timeout=timeout)

    async def sweep(self) -> None:
        """Expire due calls; mark claims whose process died mid-way as unknown."""
        now = utcnow()
        for call_id in await self.store.expire_held(now):
            await self._after_sweep(call_id, "approval.expired")
        for call_id in await self.store.abandon_lapsed_claims(now):
            log.error("approval %s was being executed by a process that stopped; marked "
                      "unknown, not re-sent", call_id)
            await self._after_sweep(call_id, "approval.unknown")

    async def run_due(self) -> None:
        """Run the delayed calls that are due, each once (a compare-and-set claim, as an
        operator's approval). One the kill switch covers is not run, now or later by
        itself: it becomes an ordinary held call for operators to approve or reject."""
        now = utcnow()
        due = await self.store.due_held(now)
        self._swept_at = now
        if not due:
            return
        freezes = [*await self.store.active_freezes(), *self.freezes.active]
        for held in due:
            freeze = covering(freezes, held.upstream, held.agent)
            if freeze is not None:
                extra = {**held.extra, "delay_frozen": {"at": iso(now),
                                                        "freeze": freeze.to_json()}}
                if await self.store.suspend_due(held.id, extra, "approval.delay_frozen"):
                    log.warning("delayed call %s fell due while writes are frozen (%s): not "
                                "run; it waits for an operator", held.id, freeze.reason)
                    await self._after_sweep(held.id, "approval.delay_frozen")
                continue
            until = lease(now, self.lease_for(held))
            if not await self.store.claim_due(held.id, DELAY_ACTOR, now, until, audit_item(
                    DELAY_ACTOR, "approval.due", held, {"delay": held.extra.get("delay")})):
                continue  # rejected meanwhile, or another process claimed it
            claimed = replace(held, status=ApprovalStatus.APPROVED, decided_by=DELAY_ACTOR,
                              decided_at=now, lease_until=until)
            try:
                await self._execute(claimed, DELAY_ACTOR, None)
            except AdminError as exc:  # retryable ones went back to pending: next sweep
                if exc.code == "store_unavailable":  # it ran; its answer is saved later
                    continue
                log.warning("delayed call %s not run: %s: %s", held.id, exc.code, exc.message)
                await self._count_due_failure(held, exc, now)
            else:
                self._due_failures.pop(held.id, None)

    async def _count_due_failure(self, held: HeldCall, exc: AdminError,
                                 now: datetime) -> None:
        """Not retried every second forever: after ``_DUE_ATTEMPTS`` failures that sent
        nothing (a capture that keeps failing), the call waits for an operator, as one
        that fell due under a freeze does. Counted per process."""
        attempts = self._due_failures.get(held.id, 0) + 1
        self._due_failures[held.id] = attempts
        if attempts < _DUE_ATTEMPTS:
            return
        extra = {**held.extra, "delay_failed": {"at": iso(now), "attempts": attempts,
                                                "error": f"{exc.code}: {exc.message}"}}
        if await self.store.suspend_due(held.id, extra, "approval.delay_failed"):
            self._due_failures.pop(held.id, None)
            log.warning("delayed call %s failed %d times unsent: it waits for an operator",
                        held.id, attempts)
            await self._after_sweep(held.id, "approval.delay_failed")

    async def _after_sweep(self, call_id: str, action: str) -> None:
        """Told to those watching; the store recorded the change with it."""
        held = await self.store.get_held(call_id)
        if held is not None:
            self.notifier.publish(action, public_view(held))
        self.waiters.wake(call_id)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
                await self.run_due()
            except Exception:
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                log.exception("approval sweep failed")
            await self._nap()

    async def _nap(self) -> None:
        """Up to a second (other processes' delayed calls are found by polling), less when
        a delayed call queued here falls due sooner."""
        self._due.clear()  # first: a call queued from here on wakes the wait below
        timeout = _SWEEP
        while self._dues and self._swept_at is not None and self._dues[0] <= self._swept_at:
            heapq.heappop(self._dues)  # looked at by the last run
        if self._dues:
            left = (self._dues[0] - utcnow()).total_seconds()
            timeout = min(timeout, max(left, 0.01))
        try:
            await within(self._due.wait(), timeout)
        except TimeoutError:
            pass

    async def _expire_if_due(self, held: HeldCall) -> HeldCall:
        if held.status is ApprovalStatus.PENDING and held.expired(utcnow()):
            await self.sweep()
            return await self.store.get_held(held.id) or held
        return held

    def _raise_if_frozen(self, held: HeldCall, freezes: list[Any]) -> None:
        freeze = covering([*freezes, *self.freezes.active], held.upstream, held.agent)
        if freeze is not None:
            raise AdminError(423, "writes_frozen",
                             f"writes are frozen ({freeze.scope.value}): {freeze.reason}; "
                             "the call stays pending")
