"""One agent call end to end.

    decide -> carry out (the mode: gateway.core.autonomy)
           -> (refuse) 403; (hold, delay) the approval queue
           -> (read)  forward, streaming both ways
           -> (write) freeze check -> capture GET -> journal intent -> final
                      freeze check -> forward -> journal outcome
           -> (shadow) freeze check -> capture GET -> journal, keep as proposed,
                      answer a projection (nothing sent)

Every step that fails before the write is sent stops it: a freeze (423), a
failed capture (502), an unavailable journal (503). The journal intent is
also the store's own freeze check (``Store.journal_intent``). Any error while
deciding denies (fail closed). The outcome is journaled after the agent has
its answer (a crash before that leaves the entry an intent: outcome unknown).
What the journal records, and when, is ``gateway.services.journal``'s.
The proxy listener turns ``GatewayError`` into the contract's JSON errors;
this module never speaks HTTP framing.

Everything that differs between kinds of upstream (REST, MCP) is the
``Sender``'s (``gateway.services.call``): how a call reads, which rule binds,
whether it writes, how a held call is rebuilt, what a shadowed write answers,
how it leaves. The steps above are the same for every kind.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from gateway.core import autonomy, urls
from gateway.core import journal as journaling
from gateway.core.approvals import HeldCall
from gateway.core.autonomy import Act
from gateway.core.headers import method_override
from gateway.core.killswitch import InFlight
from gateway.core.model import (
    Decision,
    JournalEntry,
    JournalState,
    Undo,
    Verdict,
    is_mutating,
    new_id,
    utcnow,
)
from gateway.core.policy.compiled import CallView, Upstream
from gateway.core.resend import own_key
from gateway.errors import (
    AgentGone,
    Ambiguous,
    BadRequest,
    CaptureFailed,
    GatewayError,
    PolicyDenied,
    UnknownUpstream,
)
from gateway.observe import CAPTURE, UPSTREAM, Observer
from gateway.ports import Observed, UpstreamResponse
from gateway.services.call import Call, Policies, Reply, Senders, body_reader
from gateway.services.inflight import InFlightLimits
from gateway.services.journal import Journal
from gateway.services.killswitch import FreezeState
from gateway.services.resends import WriteResends, resend_key
from gateway.services.tripwires import Tripwires
from gateway.settings import Settings

log = logging.getLogger("gateway.pipeline")
JSON_TYPE = "application/json"


class Holds(Protocol):
    """Where held calls go (``gateway.services.approvals.ApprovalQueue``)."""

    async def hold(self, upstream: Upstream, call: Call, decision: Decision,
                   delay: float | None = None) -> Reply:
        """Queue the call (``delay``: run it by itself after that many seconds)."""


class Proposals(Protocol):
    """Where shadowed writes are kept (``gateway.services.shadows.ShadowWrites``)."""

    async def keep(self, upstream: Upstream, call: Call, entry: JournalEntry) -> None:
        """Keep a shadowed write exactly as sent (id = its journal entry's) for operators
        to promote; JournalUnavailable when it cannot be kept."""


class Pipeline:
    """``holds``: without one, a held call is refused; ``proposals``: without one, a
    shadowed write is journaled only. ``observer`` times approved calls (the listener
    has its own)."""

    def __init__(self, settings: Settings, policies: Policies, senders: Senders,
                 freezes: FreezeState, journal: Journal, tripwires: Tripwires,
                 observer: Observer, holds: Holds | None = None,
                 proposals: Proposals | None = None,
                 inflight: InFlightLimits | None = None,
                 resends: WriteResends | None = None) -> None:
        self.settings = settings
        self._warned: set[tuple[str, str]] = set()  # (upstream, origin) logged once
        self.policies = policies
        self.senders = senders
        self.freezes = freezes
        self.journal = journal  # a write's life: intent, outcome, settled
        self.tripwires = tripwires
        self.observer = observer
        self.holds = holds
        self.proposals = proposals  # shadowed writes, kept for promotion
        self.inflight = inflight or InFlightLimits()  # max_in_flight's counts
        self.resends = resends or WriteResends(None)  # writes whose agent left mid-way
        self._read_body = body_reader(settings.max_write_body)

    async def settled(self) -> None:
        """``Journal.settled``, for callers that hold only the pipeline (tests)."""
        await self.journal.settled()

    async def execute_held(self, held: HeldCall, approval: dict[str, Any]) -> Reply:
        """Send an approved call through the same steps as a live one.

        Freeze check, capture and journal all apply; the journal entry records
        who approved it. The response is read whole, to be kept for the agent.
        """
        policies = self.policies.current
        upstream = policies.upstreams.get(held.upstream)
        if upstream is None:
            raise UnknownUpstream(f"upstream {held.upstream!r} is no longer configured")
        sender = self.senders(upstream)
        call = sender.rebuilt(held, new_id())
        view = sender.held_view(upstream, call)
        rule_id = held.rule
        params = sender.params(upstream, rule_id, view)
        if params is None:  # held by a tripwire, not a rule: the rule that matches decides
            matched = policies.decide(upstream, view)  # capture and undo
            rule_id, params = matched.rule, matched.params
        verdict = Verdict.DELAY if held.kind == "delay" else Verdict.HOLD
        decision = Decision(verdict, rule_id, "approved by " + (", ".join(
            v["by"] for v in approval.get("approved_by", [])) or "the delay's end"),
            policies.revision, upstream.name, params)
        call.watch = self.observer.begin([])
        try:
            if not sender.writes(upstream, rule_id, held.method):
                reply = await self._read(upstream, call)
                await reply.response.read()
                return reply
            return await self._write(upstream, call, view, decision, approval)
        finally:
            call.watch.end()

    async def handle(self, call: Call) -> Reply:
        policies = self.policies.current  # one consistent set for the whole call
        upstream = policies.upstreams.get(call.upstream)
        if upstream is None:
            raise UnknownUpstream(f"no upstream named {call.upstream!r}")
        for name, _ in call.headers:
            if method_override(name):
                raise BadRequest(f"method-override header {name!r} is not allowed: the policy "
                                 "judges the request method")
        sender = self.senders(upstream)
        view = sender.view(call)
        mutating = is_mutating(call.method)
        try:
            candidates = upstream.trie.match(view.segments)
        except Ambiguous as exc:  # a spelling of a rule's literal, not the literal
            raise BadRequest(str(exc)) from None
        view = await sender.judged(upstream, call, view, candidates, self._read_body, mutating)
        try:
            decision = policies.decide(upstream, view, candidates)
            writes = decision.write if decision.write is not None else mutating
            action = autonomy.action_for(upstream, decision, writes)
        except Exception:  # fail closed: a bug in deciding must not let a call through
            log.exception("error while deciding %s %s", call.method, call.raw_path)
            decision = Decision(Verdict.DENY, None, "internal error while deciding",
                                policies.revision, upstream.name)
            action = autonomy.refused(decision, mutating)
        call.facts, call.writes = action.facts(), action.write
        reply = await self.carry_out(upstream, call, view, action)
        if not getattr(upstream.spec, "rewrite_urls", False):
            return reply
        return await self._presented(upstream, reply)

    async def _presented(self, upstream: Upstream, reply: Reply) -> Reply:
        """``rewrite_urls``: the upstream's own URLs in the answer point at the gateway."""
        public = self.settings.public_url
        if public is None:
            reply.response.headers = [*reply.response.headers, ("warning", (
                '199 gateway "rewrite_urls is set but the gateway has no public_url: URLs '
                'in answers point past the gateway"'))]
            return reply
        mine = urls.target(public, upstream.name)
        response = reply.response
        headers = urls.rewrite_headers(response.headers, upstream.base_url, mine)
        if urls.rewritable(headers):
            body = urls.rewrite_body(await response.read(), upstream.base_url, mine)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            foreign = urls.foreign_origin(body[:65536].decode("utf-8", "replace"),
                                          upstream.base_url)
            if foreign is not None:  # PyGithub's bare "AssertionError: host" otherwise
                why = (f"the upstream's URLs name {foreign}, not base_url "
                       f"{upstream.base_url}: they are not rewritten, and SDKs that follow "
                       f"them leave the gateway or refuse them; set base_url to {foreign}...")
                headers.append(("warning", f'199 gateway "{why}"'))
                if (upstream.name, foreign) not in self._warned:
                    self._warned.add((upstream.name, foreign))
                    log.warning("upstream %s: %s", upstream.name, why)
            reply.response = UpstreamResponse(response.status, headers, body=body)
        else:
            response.headers = headers
        return reply

    async def carry_out(self, upstream: Upstream, call: Call, view: CallView,
                        action: autonomy.Action) -> Reply:
        """Where a decision becomes what happens: the one place that reads actions and
        modes (``gateway.core.autonomy``)."""
        decision = action.decision
        if action.kind is Act.REFUSE:
            raise PolicyDenied(decision.reason, rule=decision.rule)
        if action.kind in (Act.HOLD, Act.DELAY):
            if self.holds is None:
                raise PolicyDenied("held calls need an approval queue; none is configured",
                                   rule=decision.rule)
            call.buffered = await self._read_body(call)
            return await self.holds.hold(upstream, call, decision, delay=action.delay)
        with self.inflight.slot(upstream):  # max_in_flight: nothing is sent beyond it
            if not action.write:
                return await self._read(upstream, call)
            return await self._write(upstream, call, view, action.carried_out, action=action)

    async def _read(self, upstream: Upstream, call: Call) -> Reply:
        with call.watch.step(UPSTREAM, upstream.name) as step:
            response = await self.senders(upstream).relay(upstream, call, trace=step.propagate)
        return Reply(response, "allow")

    async def _write(self, upstream: Upstream, call: Call, view: CallView,
                     decision: Decision, approval: dict[str, Any] | None = None,
                     action: autonomy.Action | None = None) -> Reply:
        started = time.perf_counter()
        sender = self.senders(upstream)
        shadowed = action is not None and action.kind is Act.SHADOW
        keyed = upstream.idempotency_header(decision.rule)
        own = own_key(keyed, call.headers)  # the agent's, before the gateway adds its own
        resends = resend_key(call, upstream, own)  # what the agent's resends of it have
        sent_by_agent = approval is None and not shadowed
        if sent_by_agent:  # a resend of a write its agent left: its answer
            rejoined = await self.resends.rejoin(call, resends)
            if rejoined is not None:
                return rejoined
        self.freezes.admit(upstream.name, call.agent)
        if sent_by_agent:  # tripwires count what is sent, not what a
            # person approved nor what a shadow run only proposes
            tripped = await self.tripwires.before_write(upstream, call, view, decision)
            if tripped is not None:  # action: hold
                if self.holds is None:
                    raise PolicyDenied(tripped.reason, rule=tripped.rule)
                return await self.holds.hold(upstream, call, tripped)
        rule = upstream.rule(decision.rule)
        try:
            target = journaling.capture_path(rule, view.method, view.path, decision.params,
                                             view.body)
        except KeyError as exc:  # a capture template names an argument the call lacks
            raise CaptureFailed(f"the capture needs {{{exc.args[0]}}}, which the call lacks; "
                                "the write was not sent") from None
        prior, prior_status, capture_ms, seen = None, None, 0.0, None
        if target is not None:  # guarded like the write: an engage waits for it or cuts it off
            async with self.freezes.sending(upstream.name, call.agent):
                seen, capture_ms = await self.capture_read(upstream, call, target)
            prior, prior_status = seen.value, seen.status
        content_type = view.headers.get("content-type")
        kept = self.journal.undo_for(rule, view.method, view.path, decision.params, seen,
                                     view.body, content_type)
        entry = self.journal.entry(
            request_id=call.request_id, agent=call.agent, checkpoint=call.checkpoint,
            upstream=upstream.name, method=view.method, path=view.path, query=call.query,
            rule=decision.rule, decision=decision.verdict.value,
            policy_revision=decision.revision, headers=call.headers,
            body=call.buffered or b"", content_type=content_type, parsed=view.body,
            prior=prior, prior_status=prior_status, capture_path=target,
            undo=Undo.from_json(kept.undo) if kept.undo else None,
            reversible=kept.reversible, approval=approval,
            mode=action.mode if action is not None and action.mode != "enforce" else None,
            would_decide=action.would_decide if action is not None else None,
            sealed=kept.sealed, irreversible_reason=kept.irreversible_reason,
            resend_key=resends if sent_by_agent else None)
        if shadowed:
            return await self._shadow(upstream, call, view, entry, started)
        if keyed is not None:
            if own is None:
                call.headers.append((keyed, entry.id))  # the upstream dedupes anything sent twice
                entry.request_headers[keyed] = entry.id
            call.idempotency = (keyed, own if own is not None else entry.id)
        _still_there(call)  # an agent that left gets no intent for a write never sent
        await self.journal.intent(upstream, call, entry, "the call was not sent")
        sent = time.perf_counter()
        # the write as its agent's resends would know it: watched from the send until its
        # answer is ready for the agent (a close meanwhile, during the read-after say, is
        # the agent leaving before it had the answer)
        with self.resends.watching(call, resends, entry.id) as left:
            try:
                _still_there(call)  # the intent may have waited (a failover): not sent now
                async with self.freezes.sending(upstream.name, call.agent, InFlight(
                        entry.id, call.agent, upstream.name, view.method, view.path,
                        self.freezes.member)):
                    with call.watch.step(UPSTREAM, upstream.name) as step:
                        response = await sender.forward(
                            upstream, call, approved=approval is not None,
                            trace=step.propagate)
            except GatewayError as exc:
                exc.extra.setdefault("journal", entry.id)  # the audit record names the entry
                if exc.maybe_sent and (call.idempotency is None
                                       or call.idempotency[1] == entry.id):
                    exc.retry = False  # it may have landed, and no key of the agent's dedupes
                await self.resends.settle(left, None, exc)
                self.journal.later(entry, await self.journal.outcome_of(
                    entry, None, exc, started, sent, capture_ms, upstream, sender, view.body),
                    call.watch)
                if approval is None:
                    await self.tripwires.after_write(upstream, call, exc)
                raise
            # Built now, read-after included: the state the write left is read before the
            # agent (or anyone) can change it again; only the store write waits.
            self.journal.later(entry, await self.journal.outcome_of(
                entry, response, None, started, sent, capture_ms, upstream, sender, view.body),
                call.watch)
            if approval is None:
                await self.tripwires.after_write(upstream, call, response.status)
            await self.resends.settle(left, response)
        return Reply(response, "allow", journal_id=entry.id)

    async def _shadow(self, upstream: Upstream, call: Call, view: CallView,
                      entry: JournalEntry, started: float) -> Reply:
        """``mode: shadow``: the write is journaled with its prior state and kept, exactly
        as sent, as a proposal operators may promote to a held call; the agent gets the
        gateway's projection of the answer (``gateway.core.shadow``). Nothing is sent."""
        projected = self.senders(upstream).projection(upstream, call, view, entry)
        stored = journaling.store_body(projected.body, JSON_TYPE if projected.body else None,
                                       self.settings.journal_body_limit, projected.value)
        entry.state, entry.decision, entry.status = JournalState.SHADOW, "shadow", projected.status
        entry.response_headers = dict(projected.headers)
        entry.response_body, entry.response_body_sha256 = stored.text, stored.sha256
        entry.response_body_size, entry.completed_at = stored.size, utcnow()
        entry.undo, entry.reversible = None, False  # never sent: nothing to undo
        entry.timings = {**entry.timings, "total_ms": round((time.perf_counter() - started)
                                                             * 1000, 3)}
        # The intent first: one a freeze refuses must leave no proposal to promote.
        await self.journal.intent(upstream, call, entry, "the shadowed call was not recorded")
        if self.proposals is not None:
            call.buffered = await self._read_body(call)
            await self.proposals.keep(upstream, call, entry)
        response = UpstreamResponse(projected.status, list(projected.headers),
                                    body=projected.body)
        return Reply(response, "shadow", journal_id=entry.id)

    async def capture_read(self, upstream: Upstream, call: Call,
                           target: str) -> tuple[Observed, float]:
        began = time.perf_counter()
        with call.watch.step(CAPTURE, upstream.name) as step:
            seen = await self.senders(upstream).capture(upstream, call, target,
                                                       trace=step.propagate)
        return seen, (time.perf_counter() - began) * 1000


def _still_there(call: Call) -> None:
    """AgentGone once the agent's connection is closed: a client that gave up on a write
    (its timeout while the journal waited for a store that fails over) retries it, and
    the write must not land twice."""
    if call.link is not None and call.link.closed():
        raise AgentGone("the agent closed its connection before its write was sent; "
                        "nothing was sent")
