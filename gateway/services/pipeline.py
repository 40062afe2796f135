"""One agent call end to end.

    decide -> (read)  forward, streaming both ways
           -> (write) freeze check -> capture GET -> journal intent -> final
                      freeze check -> forward -> journal outcome

Every step that fails before the write is sent stops it: a freeze (423), a
failed capture (502), an unavailable journal (503). The journal intent is
also the store's own freeze check (``Store.journal_intent``). Any error while
deciding denies (fail closed). The outcome is journaled after the agent has
its answer (a crash before that leaves the entry an intent: outcome unknown).
The proxy listener turns ``GatewayError`` into the contract's JSON errors;
this module never speaks HTTP framing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from gateway.core import journal as journaling
from gateway.core.approvals import HeldCall
from gateway.core.headers import METHOD_OVERRIDES, upstream_request_headers
from gateway.core.killswitch import InFlight
from gateway.core.model import (
    Decision,
    JournalEntry,
    JournalOutcome,
    JournalState,
    Undo,
    Verdict,
    is_mutating,
    new_id,
    utcnow,
)
from gateway.core.policy import CallView, PolicySet, Upstream
from gateway.core.redact import redact_headers, redact_query
from gateway.errors import (
    BadRequest,
    CaptureFailed,
    GatewayError,
    JournalUnavailable,
    PolicyDenied,
    UnknownUpstream,
    UpstreamTimeout,
    WriteCutOff,
)
from gateway.ports import Store, UpstreamResponse
from gateway.ports import Upstream as UpstreamClient
from gateway.services.call import Call, Reply
from gateway.services.freezes import FreezeState
from gateway.services.tripwires import Tripwires
from gateway.settings import Settings

log = logging.getLogger("gateway.pipeline")


class Holds(Protocol):
    """Where held calls go (``gateway.services.approvals.ApprovalQueue``)."""

    async def hold(self, upstream: Upstream, call: Call, decision: Decision) -> Reply: ...


class BodyTooLarge(GatewayError):
    status, code, decision = 413, "payload_too_large", "deny"


def segments_of(raw_path: str) -> list[str]:
    """Decoded path segments for matching; ambiguous paths are a bad request."""
    if raw_path in ("", "/"):
        return []
    parts = raw_path[1:].split("/")
    if parts and parts[-1] == "":
        parts.pop()
    out = []
    for part in parts:
        decoded = unquote(part)
        if part == "" or decoded in (".", "..") or "/" in decoded or "\\" in decoded \
                or "\x00" in decoded:
            raise BadRequest(f"ambiguous path segment {part!r}")
        out.append(decoded)
    return out


class Pipeline:
    def __init__(self, settings: Settings, store: Store, client: UpstreamClient,
                 freezes: FreezeState, policies: PolicySet) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.freezes = freezes
        self.policies = policies
        self.holds: Holds | None = None
        self.tripwires = Tripwires(freezes, store)  # none configured: a no-op
        self._outcomes: set[asyncio.Task[None]] = set()  # journaled after the reply

    async def settled(self) -> None:
        """Until every outcome of a write answered so far is journaled (read your writes)."""
        while self._outcomes:
            await asyncio.gather(*self._outcomes, return_exceptions=True)

    def _later(self, *args: Any) -> None:
        task = asyncio.create_task(self.record_outcome(*args))
        self._outcomes.add(task)
        task.add_done_callback(self._outcomes.discard)

    async def execute_held(self, held: HeldCall, approval: dict[str, Any]) -> Reply:
        """Send an approved call through the same steps as a live one.

        Freeze check, capture and journal all apply; the journal entry records
        who approved it. The response is read whole, to be kept for the agent.
        """
        upstream = self.policies.upstreams.get(held.upstream)
        if upstream is None:
            raise UnknownUpstream(f"upstream {held.upstream!r} is no longer configured")
        call = Call(request_id=new_id(), agent=held.agent, agent_key=None,
                    upstream=held.upstream, method=held.method, raw_path=held.raw_path,
                    query=held.query, headers=list(held.headers), checkpoint=held.checkpoint,
                    buffered=held.body)
        view = self.view_of(call)
        view = CallView(view.method, view.path, view.segments, view.query, view.headers,
                        view.agent, journaling.parse_body(held.body,
                                                          view.headers.get("content-type")))
        rule_id = held.rule
        params = next((p for index, p in upstream.trie.match(view.segments)
                       if upstream.spec.rules[index].id == rule_id), None)
        if params is None:  # held by a tripwire, not a rule: the rule that matches decides
            matched = self.policies.decide(upstream, view)  # capture and undo
            rule_id, params = matched.rule, matched.params
        decision = Decision(Verdict.HOLD, rule_id, "approved by " + ", ".join(
            v["by"] for v in approval.get("approved_by", [])), self.policies.revision,
            upstream.name, params)
        if not is_mutating(held.method):
            reply = await self._read(upstream, call)
            await reply.response.read()
            return reply
        return await self._write(upstream, call, view, decision, approval)

    def view_of(self, call: Call) -> CallView:
        return CallView(call.method, unquote(call.raw_path) or "/", segments_of(call.raw_path),
                        dict(parse_qsl(call.query, keep_blank_values=True)),
                        dict(call.headers), call.agent)

    async def handle(self, call: Call) -> Reply:
        policies = self.policies  # one consistent set for the whole call
        upstream = policies.upstreams.get(call.upstream)
        if upstream is None:
            raise UnknownUpstream(f"no upstream named {call.upstream!r}")
        for name, _ in call.headers:
            if name in METHOD_OVERRIDES:
                raise BadRequest(f"method-override header {name!r} is not allowed: the policy "
                                 "judges the request method")
        view = self.view_of(call)
        mutating = is_mutating(call.method)
        candidates = upstream.trie.match(view.segments)
        if mutating or upstream.needs_body(candidates):
            call.buffered = await self._read_body(call)
            parsed = journaling.parse_body(call.buffered, view.headers.get("content-type"))
            view = CallView(view.method, view.path, view.segments, view.query, view.headers,
                            view.agent, parsed)
        try:
            decision = policies.decide(upstream, view, candidates)
        except Exception:  # fail closed: a bug in deciding must not let a call through
            log.exception("error while deciding %s %s", call.method, call.raw_path)
            decision = Decision(Verdict.DENY, None, "internal error while deciding",
                                policies.revision, upstream.name)
        if decision.verdict is Verdict.DENY:
            raise PolicyDenied(decision.reason, rule=decision.rule)
        if decision.verdict is Verdict.HOLD:
            if self.holds is None:
                raise PolicyDenied("held calls need an approval queue; none is configured",
                                   rule=decision.rule)
            call.buffered = await self._read_body(call)
            return await self.holds.hold(upstream, call, decision)
        if not mutating:
            return await self._read(upstream, call)
        return await self._write(upstream, call, view, decision)

    async def _read_body(self, call: Call) -> bytes:
        if call.buffered is not None or call.body is None:
            return call.buffered or b""
        chunks, size = [], 0
        async for chunk in call.body:
            size += len(chunk)
            if size > self.settings.max_write_body:
                raise BodyTooLarge(f"request body over {self.settings.max_write_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _url(self, upstream: Upstream, raw_path: str, query: str) -> str:
        return upstream.base_url + raw_path + (f"?{query}" if query else "")

    def _headers(self, upstream: Upstream, call: Call, drop_encoding: bool) -> list[tuple[str, str]]:
        credential = None
        if upstream.spec.credentials is not None:
            credential = (upstream.spec.credentials.header.lower(), upstream.credential_value or "")
        return upstream_request_headers(call.headers, call.agent_key, credential,
                                        urlsplit(upstream.base_url).netloc, drop_encoding)

    async def _read(self, upstream: Upstream, call: Call) -> Reply:
        body = call.buffered if call.buffered is not None else call.body
        response = await self.client.request(
            call.method, self._url(upstream, call.raw_path, call.query),
            self._headers(upstream, call, drop_encoding=False), body, stream=True,
            timeout=upstream.spec.timeout or self.settings.upstream_timeout)
        return Reply(response, "allow")

    async def _write(self, upstream: Upstream, call: Call, view: CallView,
                     decision: Decision, approval: dict[str, Any] | None = None) -> Reply:
        started = time.perf_counter()
        self.freezes.admit(upstream.name, call.agent)
        if approval is None:  # an approved call was judged by a person, not by tripwires
            tripped = await self.tripwires.before_write(upstream, call, view, decision)
            if tripped is not None:  # action: hold
                if self.holds is None:
                    raise PolicyDenied(tripped.reason, rule=tripped.rule)
                return await self.holds.hold(upstream, call, tripped)
        rule = upstream.rule(decision.rule)
        target = journaling.capture_path(rule, call.method, view.path, decision.params)
        prior, prior_status, capture_ms = None, None, 0.0
        if target is not None:  # guarded like the write: an engage waits for it or cuts it off
            async with self.freezes.sending(upstream.name, call.agent):
                prior, prior_status, capture_ms = await self.capture(upstream, call, target)
        content_type = view.headers.get("content-type")
        undo, reversible = journaling.infer_undo(rule, call.method, view.path, decision.params,
                                                 prior, prior_status, view.body, content_type)
        stored = journaling.store_body(call.buffered or b"", content_type,
                                       self.settings.journal_body_limit, view.body)
        entry = JournalEntry(
            id=new_id(), at=utcnow(), request_id=call.request_id, agent=call.agent,
            checkpoint=call.checkpoint, upstream=upstream.name, method=call.method,
            path=view.path, query=redact_query(call.query), rule=decision.rule,
            decision=decision.verdict.value, policy_revision=decision.revision,
            request_headers=redact_headers(call.headers), request_body=stored.text,
            request_body_sha256=stored.sha256, request_body_size=stored.size,
            request_content_type=content_type, prior=prior, prior_status=prior_status,
            capture_path=target, undo=Undo.from_json(undo) if undo else None,
            reversible=reversible, approval=approval)
        try:
            journaled = await self.store.journal_intent(entry)
        except Exception as exc:
            log.error("journal unavailable: %s", exc)
            raise JournalUnavailable("the change journal could not be written; "
                                     "the call was not sent") from exc
        if not journaled:  # the store's verdict: a freeze this process has not heard of yet
            await self.freezes.refused(upstream.name, call.agent)
        sent = time.perf_counter()
        try:
            async with self.freezes.sending(upstream.name, call.agent, InFlight(
                    entry.id, call.agent, upstream.name, call.method, view.path,
                    self.freezes.member)):
                response = await self.client.request(
                    call.method, self._url(upstream, call.raw_path, call.query),
                    self._headers(upstream, call, drop_encoding=True), call.buffered,
                    timeout=upstream.spec.timeout or self.settings.upstream_timeout)
        except GatewayError as exc:
            self._later(entry, None, exc, started, sent, capture_ms)
            if approval is None:
                await self.tripwires.after_write(upstream, call, exc)
            raise
        self._later(entry, response, None, started, sent, capture_ms, upstream)
        if approval is None:
            await self.tripwires.after_write(upstream, call, response.status)
        return Reply(response, "allow", journal_id=entry.id)

    async def capture(self, upstream: Upstream, call: Call,
                       target: str) -> tuple[Any, int, float]:
        began = time.perf_counter()
        headers = [h for h in self._headers(upstream, call, drop_encoding=True)
                   if h[0] not in ("content-type", "content-encoding")]
        headers.append(("accept-encoding", "identity"))
        try:
            response = await self.client.request(
                "GET", upstream.base_url + target, headers, None,
                timeout=self.settings.capture_timeout)
        except GatewayError as exc:
            raise CaptureFailed(f"prior-state GET {target} failed ({exc.message}); "
                                "the write was not sent") from exc
        status = response.status
        if not (200 <= status < 300 or status in (404, 410)):
            raise CaptureFailed(f"prior-state GET {target} answered {status}; "
                                "the write was not sent", capture_status=status)
        body = response.body or b""
        return journaling.prior_value(body, status), status, (time.perf_counter() - began) * 1000

    async def record_outcome(self, entry: JournalEntry, response: UpstreamResponse | None,
                       error: GatewayError | None, started: float, sent: float,
                       capture_ms: float, upstream: Upstream | None = None) -> None:
        now = time.perf_counter()
        timings = {"capture_ms": round(capture_ms, 3), "upstream_ms": round((now - sent) * 1000, 3),
                   "total_ms": round((now - started) * 1000, 3)}
        undo, reversible = entry.undo, entry.reversible
        if response is None:
            state = JournalState.UNKNOWN if isinstance(error, WriteCutOff) else JournalState.FAILED
            outcome = JournalOutcome(state, None, {}, None, None, 0, undo,
                                     reversible and not isinstance(error, UpstreamTimeout)
                                     and state is JournalState.FAILED,
                                     error.message if error else None, timings, utcnow())
        else:
            body = response.body or b""
            headers = redact_headers(response.headers)
            content_type = headers.get("content-type")
            parsed = journaling.parse_body(body, content_type)  # once, for all below
            if entry.method == "POST" and undo is None and upstream is not None \
                    and entry.capture_path is None:
                created = journaling.undo_for_created(
                    entry.path, urlsplit(upstream.base_url).path.rstrip("/"), response.status,
                    headers, parsed)
                if created is not None and not (rule_says_none(upstream, entry.rule)):
                    undo, reversible = Undo.from_json(created), True
            stored = journaling.store_body(body, content_type, self.settings.journal_body_limit,
                                           parsed)
            after = await self._read_after(entry, response.status, parsed, undo, upstream)
            outcome = JournalOutcome(JournalState.COMPLETED, response.status, headers,
                                     stored.text, stored.sha256, stored.size, undo, reversible,
                                     None, timings, utcnow(), after)
        try:
            await self.store.journal_outcome(entry.id, outcome)
        except Exception:  # the write happened; its intent row stays for operators to see
            log.exception("could not journal the outcome of %s", entry.id)


    async def _read_after(self, entry: JournalEntry, status: int, parsed: Any,
                          undo: Undo | None, upstream: Upstream | None) -> Any:
        """The resource as the write left it, read only when the response does not say.

        Rollback compares this with the resource before compensating (drift);
        most APIs answer a write with the resource, so this read is rare.
        """
        if upstream is None or not 200 <= status < 300 or entry.method == "DELETE":
            return None
        if isinstance(parsed, dict):
            return None
        target = entry.capture_path or (undo.path if undo is not None and
                                        undo.method == "DELETE" else None)
        if target is None:
            return None
        try:
            response = await self.client.request("GET", upstream.base_url + target,
                                                 gateway_headers(upstream),
                                                 None, timeout=self.settings.capture_timeout)
        except GatewayError as exc:
            log.warning("read after %s %s failed (%s); rollback will need force",
                        entry.method, entry.path, exc.message)
            return None
        if not 200 <= response.status < 300:
            log.warning("read after %s %s answered %s (does the policy inject a credential?); "
                        "rollback will need force", entry.method, entry.path, response.status)
            return None
        return journaling.prior_value(response.body or b"", response.status)


def gateway_headers(upstream: Upstream, content_type: str | None = None) -> list[tuple[str, str]]:
    """Headers for the gateway's own calls (reads after writes, rollback): JSON, the
    upstream's credential, no compression."""
    headers = [("host", urlsplit(upstream.base_url).netloc), ("accept", "application/json"),
               ("accept-encoding", "identity")]
    if content_type:
        headers.append(("content-type", content_type))
    if upstream.spec.credentials is not None and upstream.credential_value:
        headers.append((upstream.spec.credentials.header.lower(), upstream.credential_value))
    return headers


def rule_says_none(upstream: Upstream, rule_id: str | None) -> bool:
    rule = upstream.rule(rule_id)
    return rule is not None and rule.undo == "none"
