"""One agent call as the readers hand it on, the reply, and what sends it.

A ``Call`` is what every reader of calls (the REST listener, the MCP reader,
approvals that execute a held call) hands to the pipeline, with the agent's
connection (``AgentLink``) where there is one; a ``Reply`` is what
comes back, the upstream's response and the decision to echo to the agent.

A ``Sender`` is everything the pipeline does not know about one kind of
upstream (``gateway.upstreams.rest``, ``gateway.upstreams.mcp``): how a call
reads as a ``CallView``, which rule applies and whether it writes, how a held
call is rebuilt, what a shadowed write answers, and how the call leaves.
``Senders`` finds an upstream's; ``Policies`` holds the policy set in force
(swapped whole on reload, so a call reads one set from start to end).

This module sits on the senders' floor (``tests/test_layout.py``): they are
typed on the call they send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.approvals import HeldCall
from gateway.core.body import parse_body
from gateway.core.canonical import Target
from gateway.core.mcp import Message
from gateway.core.model import Checkpoint, JournalEntry
from gateway.core.policy.compiled import CallView, Upstream
from gateway.core.policy.decide import PolicySet
from gateway.core.rollback import Step
from gateway.core.shadow import Projection
from gateway.errors import BodyTooLarge, UnknownUpstream
from gateway.observe import NO_WATCH, Watch
from gateway.ports import Headers, Observed, UpstreamResponse, untraced


class AgentLink(Protocol):
    """The agent's connection, as the listener shows it (``gateway.proxy.connection``)."""

    def closed(self) -> bool:
        """True once it is closed: the agent gave up."""

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """``callback`` runs once, when it closes (now, if it is closed); the function
        returned takes it back."""


@dataclass(slots=True)
class Call:
    request_id: str
    agent: str
    agent_key: str | None
    upstream: str
    method: str
    raw_path: str  # percent-encoded, as received, after /{upstream}
    query: str
    headers: list[tuple[str, str]]  # lower-case names
    checkpoint: Checkpoint
    body: AsyncIterator[bytes] | None = None
    buffered: bytes | None = None
    watch: Watch = NO_WATCH  # the steps of this call are timed (and traced) here
    mcp: Message | None = None  # one JSON-RPC message to an MCP upstream (method: its method)
    target: Target | None = None  # raw_path's canonical reading, when the listener made it
    # the policy's idempotency header and the value this write is sent with (the agent's,
    # else its journal entry id), for senders that make the request themselves (MCP)
    idempotency: tuple[str, str] | None = None
    # what was decided, for the call's audit record (upstream, rule, mode, would_decide):
    # set by the pipeline once the policy has spoken, kept when the call is refused after
    facts: dict[str, Any] = field(default_factory=dict)
    # the policy judged it a write (``effect: write`` makes a GET one): it is audited, as
    # every write is, whatever its method; set by the pipeline with ``facts``
    writes: bool = False
    # the agent's connection (the listener's; None: no connection, an operator's call):
    # a write is not sent to an agent that left
    link: AgentLink | None = None


@dataclass(slots=True)
class Reply:
    response: UpstreamResponse
    decision: str
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    journal_id: str | None = None
    # (decision, detail) records for the audit chain, when a reader knows better than the
    # listener what was decided (an MCP POST carries tool calls); None: the listener's own
    audits: list[tuple[str, dict[str, Any]]] | None = None


BodyReader = Callable[[Call], Awaitable[bytes]]


def body_reader(limit: int) -> BodyReader:
    """The one size-capped read of a call's body (kept in ``call.buffered``): over
    ``limit`` bytes is ``BodyTooLarge``, before the first read when the length is declared
    (an ``Expect: 100-continue`` client then gets no 100)."""

    async def read(call: Call) -> bytes:
        if call.buffered is not None or call.body is None:
            return call.buffered or b""
        declared = next((v for k, v in call.headers if k == "content-length"), None)
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
        chunks, size = [], 0
        async for chunk in call.body:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
        call.buffered = b"".join(chunks)
        return call.buffered

    return read


@dataclass(frozen=True, slots=True)
class Answer:
    """An upstream's answer to a write, read once for the journal by its sender."""

    body: bytes  # as journaled (an MCP tool's JSON-RPC response, also out of an SSE body)
    content_type: str | None
    parsed: Any  # the body read once (JSON, form, text)
    shown: Any  # what the journal keeps of it (a secret in a tool's text is one too)
    failed: str | None  # why the write did no work though it was answered (a tool's error)
    says_state: bool  # the answer is the resource as the write left it: no read after
    read_as_value: bool  # a read after is kept as read, not as a digest when not JSON


def plain_answer(body: bytes, content_type: str | None) -> Answer:
    """An HTTP answer: its body read by its media type, kept as read."""
    parsed = parse_body(body, content_type)
    return Answer(body, content_type, parsed, parsed, None, isinstance(parsed, dict), False)


class Sender(Protocol):
    """One kind of upstream (REST: HTTP requests; MCP: JSON-RPC tool calls): how its
    calls read and how they leave. Deciding, journaling and freezing are the pipeline's.
    Transport failures raise ``UpstreamUnreachable`` / ``UpstreamTimeout``."""

    # -- reading a call (pure) -------------------------------------------------------

    def view(self, call: Call) -> CallView:
        """What the policy judges, before the body is read."""

    async def judged(self, upstream: Upstream, call: Call, view: CallView,
                     candidates: list[tuple[int, dict[str, str]]], read: BodyReader,
                     writes: bool) -> CallView:
        """The view with what a rule judges or the journal keeps read (query, body), one
        reading or ``BadRequest``; ``writes``: the method changes something."""

    def rebuilt(self, held: HeldCall, request_id: str) -> Call:
        """A held call as a call again (its body buffered)."""

    def held_view(self, upstream: Upstream, call: Call) -> CallView:
        """A rebuilt held call read as a live one is: one reading, or ``BadRequest``."""

    def params(self, upstream: Upstream, rule_id: str | None,
               view: CallView) -> dict[str, str] | None:
        """The parameters rule ``rule_id`` binds in this call; None: it does not match."""

    def writes(self, upstream: Upstream, rule_id: str | None, method: str) -> bool:
        """Whether a call the rule matched changes something (its ``effect``)."""

    def projection(self, upstream: Upstream, call: Call, view: CallView,
                   entry: JournalEntry) -> Projection:
        """What a shadowed write answers (``gateway.core.shadow``); may set
        ``entry.after``, the state the write would leave."""

    def answer(self, method: str, body: bytes, content_type: str | None,
               sent: Any = None) -> Answer:
        """A write's answer (the agent's, or a compensation's) as the journal reads it;
        ``sent``: the parsed body (a tool call's arguments) whose secret-named values the
        journal must not show where the answer repeats them."""

    # -- sending ---------------------------------------------------------------------

    async def relay(self, upstream: Upstream, call: Call,
                    trace: Callable[[Headers], Headers] = untraced) -> UpstreamResponse:
        """A read, streamed both ways. ``trace`` adds the trace context to the headers sent."""

    async def forward(self, upstream: Upstream, call: Call, approved: bool,
                      trace: Callable[[Headers], Headers] = untraced) -> UpstreamResponse:
        """A judged write, its response read whole (to be journaled). ``approved``: the
        call comes from the approval queue, not from a connected agent."""

    async def capture(self, upstream: Upstream, call: Call, target: str,
                      trace: Callable[[Headers], Headers] = untraced) -> Observed:
        """The prior state at ``target``, its status, and the bytes read; raises
        ``CaptureFailed`` when there is no trustworthy answer."""

    async def read(self, upstream: Upstream, target: str) -> Observed:
        """The gateway's own read of ``target`` (after a write; rollback's drift check)."""

    def own_headers(self, upstream: Upstream, content_type: str | None) -> list[tuple[str, str]]:
        """Headers of the gateway's own calls (as journaled for a compensation)."""

    async def compensate(self, upstream: Upstream, step: Step, headers: list[tuple[str, str]],
                         body: bytes | None) -> UpstreamResponse:
        """Send one rollback step."""

    async def close(self) -> None:
        """Let go of kept connections (at shutdown)."""


class Senders:
    """The sender of each kind of upstream (``kind: http``, ``kind: mcp``)."""

    def __init__(self, by_kind: Mapping[str, Sender]) -> None:
        self._by_kind = dict(by_kind)

    def __call__(self, upstream: Upstream) -> Sender:
        sender = self._by_kind.get(upstream.kind)
        if sender is None:
            raise UnknownUpstream(f"upstream {upstream.name!r} is {upstream.kind}, which this "
                                  "gateway cannot reach")
        return sender

    async def close(self) -> None:
        for sender in self._by_kind.values():
            await sender.close()


class Policies:
    """The policy set in force. Read ``current`` once per call (one consistent set for
    the whole of it); ``swap`` puts a reloaded set in force for the calls after."""

    def __init__(self, current: PolicySet) -> None:
        self.current = current

    def swap(self, policies: PolicySet) -> None:
        self.current = policies

    def upstream(self, name: str) -> Upstream | None:
        return self.current.upstreams.get(name)
