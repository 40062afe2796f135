"""One agent call as the listeners read it, and the gateway's reply to it.

A ``Call`` is what every reader of calls (the REST listener, the MCP reader,
approvals that execute a held call) hands to the pipeline; a ``Reply`` is what comes back,
the upstream's response and the decision to echo to the agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.core.canonical import Target
from gateway.core.mcp import Message
from gateway.core.model import Checkpoint
from gateway.observe import NO_WATCH, Watch
from gateway.ports import UpstreamResponse


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
    # what was decided, for the call's audit record (upstream, rule, mode, would_decide):
    # set by the pipeline once the policy has spoken, kept when the call is refused after
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    response: UpstreamResponse
    decision: str
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    journal_id: str | None = None
    # (decision, detail) records for the audit chain, when a reader knows better than the
    # listener what was decided (an MCP POST carries tool calls); None: the listener's own
    audits: list[tuple[str, dict[str, Any]]] | None = None
