"""Held calls and their approval state machine (pure).

A call that a ``hold`` rule stops is kept, exactly as the agent sent it,
until operators decide. The states:

    shadow --promoted--> pending --vote (enough distinct approvers)--> approved --forwarded--> executed
                           |      --due (action: delay)-------------->    |----error-------> failed
                           |                                               '----lease lost---> unknown
                           |--reject--> rejected
                           '--expires--> expired

``approved`` means "claimed for execution": exactly one process wins the
compare-and-set from ``pending`` and forwards the call at most once. A claim
carries a lease; a call still ``approved`` after its lease ran out belongs to a
process that died mid-way and becomes ``unknown`` (shown to operators, never
re-sent). The call is bound to a digest of its exact bytes, so what executes
is what the approvers were shown.

Two other ways in: a call of an ``action: delay`` rule is pending with a
``due_at``, and the gateway claims it by itself once due (unless rejected
first; a kill switch covering it then turns it into an ordinary held call, its
``due_at`` cleared, for operators to decide). A write of a ``mode: shadow`` run
is kept as ``shadow`` (never in the queue) until an operator promotes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from gateway.core import mcp
from gateway.core.body import parse_body
from gateway.core.model import AuditItem, Checkpoint, iso, utcnow
from gateway.core.policy.mcp_schema import TOOLS_CALL
from gateway.core.redact import (
    MIN_ECHO,
    REDACTED,
    is_secret_name,
    redact_headers,
    redact_json,
    redact_query,
    redacted_body,
    replace_values,
    secret_values,
)
from gateway.core.resend import key_of
from gateway.errors import ApprovalRefused


class ApprovalStatus(str, Enum):
    PENDING = "pending"
    APPROVED = "approved"
    EXECUTED = "executed"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    SHADOW = "shadow"  # a shadowed write kept as proposed: not in the queue until promoted

    @property
    def terminal(self) -> bool:
        return self not in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED,
                            ApprovalStatus.SHADOW)


@dataclass(frozen=True, slots=True)
class Vote:
    by: str
    role: str
    at: datetime
    comment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "role": self.role, "at": iso(self.at), "comment": self.comment}


@dataclass(frozen=True, slots=True)
class HeldCall:
    """One held call. ``headers`` are the agent's, minus secrets and the
    gateway's own; the upstream credential is injected again at execution."""

    id: str
    at: datetime
    agent: str
    upstream: str
    method: str
    raw_path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    checkpoint: Checkpoint
    rule: str | None
    policy_revision: str
    digest: str
    required: int = 1
    roles: tuple[str, ...] | None = None
    operators: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    status: ApprovalStatus = ApprovalStatus.PENDING
    votes: tuple[Vote, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    lease_until: datetime | None = None
    response: dict[str, Any] | None = None
    journal_id: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    due_at: datetime | None = None  # action: delay: the gateway runs it then (if still pending)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def kind(self) -> str:
        """``hold`` (operators decide), ``delay`` (runs by itself once due) or ``shadow``
        (a shadowed write, kept as proposed or promoted to the queue)."""
        if "delay" in self.extra:
            return "delay"
        return "shadow" if "shadow" in self.extra else "hold"


def audit_detail(approval: str, agent: str, upstream: str, method: str, raw_path: str,
                 rule: str | None, more: dict[str, Any] | None = None) -> dict[str, Any]:
    """The detail of an audit record naming a held call (its operators' and the
    sweeper's records alike); ``more`` adds to it, or overrides."""
    return {"approval": approval, "agent": agent, "upstream": upstream, "method": method,
            "path": raw_path or "/", "rule": rule, **(more or {})}


def audit_item(actor: str, action: str, call: HeldCall,
               more: dict[str, Any] | None = None) -> AuditItem:
    """A record naming ``call``, appended with the change it records (``HeldCallStore``:
    the change and its record commit together, or neither does)."""
    return (actor, action, audit_detail(call.id, call.agent, call.upstream, call.method,
                                        call.raw_path, call.rule, more), utcnow())


def request_digest(method: str, upstream: str, raw_path: str, query: str,
                   headers: tuple[tuple[str, str], ...], body: bytes) -> str:
    """sha256 over a canonical encoding of everything that would be sent."""
    canonical = json.dumps({
        "method": method, "upstream": upstream, "path": raw_path, "query": query,
        "headers": [list(h) for h in headers],
        "body": base64.b64encode(body).decode(),
    }, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# An agent that left before its held call was answered (its own timeout shorter than
# ``wait``) resends it, and so does the SDK of one answered 409 approval_pending. While
# the call is pending or being executed, or once it is executed or rejected, the resend
# rejoins it (one call, one answer) instead of queueing a second one that a person could
# approve twice; an hour after the agent left, a request is a new one.
REJOINABLE = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.EXECUTED,
              ApprovalStatus.REJECTED)


def resend_key(call: HeldCall, key: str | None) -> str:
    """What a resend of ``call`` has in common with it (``gateway.core.resend.key_of``;
    ``key``: the agent's own idempotency key, if it sent one)."""
    return key_of(call.agent, call.checkpoint.run, call.upstream, call.method,
                  call.raw_path, call.query, call.body, key)


def digest_of(call: HeldCall) -> str:
    return request_digest(call.method, call.upstream, call.raw_path, call.query, call.headers,
                          call.body)


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    call: HeldCall  # with the vote added
    ready: bool  # enough distinct approvers: claim and execute


def vote(call: HeldCall, operator: str, role: str, at: datetime,
         comment: str | None = None, digest: str | None = None) -> VoteOutcome:
    """Add ``operator``'s approval, or raise ApprovalRefused.

    ``digest``, when the approver passes the one they were shown, must match.
    """
    _must_be_pending(call, at)
    if operator == call.agent:
        raise ApprovalRefused("self_approval", f"{operator} made this call; another operator "
                              "must approve it")
    if digest is not None and digest != call.digest:
        raise ApprovalRefused("digest_mismatch", "the call differs from the one you were shown")
    if call.roles is not None and role not in call.roles:
        raise ApprovalRefused("forbidden", f"this rule needs one of the roles "
                              f"{', '.join(call.roles)} to approve")
    if call.operators is not None and operator not in call.operators:
        raise ApprovalRefused("forbidden", f"{operator} may not approve calls of this rule")
    if any(v.by == operator for v in call.votes):
        raise ApprovalRefused("already_voted", f"{operator} already approved this call; "
                              f"it needs {call.required} distinct approvers")
    votes = (*call.votes, Vote(operator, role, at, comment))
    return VoteOutcome(replace(call, votes=votes), len(votes) >= call.required)


def check_rejectable(call: HeldCall, at: datetime) -> None:
    _must_be_pending(call, at)


def _must_be_pending(call: HeldCall, at: datetime) -> None:
    if call.status is not ApprovalStatus.PENDING:
        raise ApprovalRefused("already_decided", f"approval {call.id} is {call.status.value}")
    if call.expired(at):
        raise ApprovalRefused("already_decided", f"approval {call.id} expired")


def lease(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)


def agent_status(status: ApprovalStatus) -> str:
    """What the agent is told: the state, ``unknown`` included (never ``failed`` for a
    call that may have landed: an agent that took it for failed would send it again).
    Shadowed writes are never shown to agents (``ApprovalQueue.agent_view``)."""
    return status.value


def field_changes(method: str, current: Any, body: Any) -> list[dict[str, Any]]:
    """Before -> after, field by field, of what the held call would do.

    >>> field_changes("PATCH", {"plan": "pro", "name": "Ada"}, {"plan": "free"})
    [{'field': 'plan', 'before': 'pro', 'after': 'free'}]
    """
    before = current if isinstance(current, dict) else {}
    if method == "DELETE":
        return [{"field": k, "before": v, "after": None} for k, v in sorted(before.items())]
    if not isinstance(body, dict):
        return []
    if method == "PUT":
        keys = sorted(set(before) | set(body))
        after = body
    else:  # PATCH, POST: the fields sent
        keys = sorted(body)
        after = {**before, **body} if method == "PATCH" else body
    return [{"field": k, "before": before.get(k), "after": after.get(k)}
            for k in keys if before.get(k) != after.get(k) or k not in before]


def proposed_changes(call: HeldCall, current: Any) -> list[dict[str, Any]]:
    """``field_changes`` of a held call over ``current``, as operators see it: what it
    sends (a REST body; a tool call's arguments, laid over the state as a PATCH is)
    with secret-named fields redacted, as the current state is. A secret-named field it
    sends is listed though its two redacted sides are equal: whether the value differs
    cannot be shown, that the call sets it must be."""
    if call.method == TOOLS_CALL:
        method, sent = "PATCH", mcp.message(mcp.decode(call.body)).arguments
    else:
        method, sent = call.method, parse_body(call.body, dict(call.headers).get("content-type"))
    shown = redact_json(sent)
    changes = field_changes(method, current, shown)
    if method == "DELETE" or not isinstance(shown, dict):
        return changes
    listed = {change["field"] for change in changes}
    before = current if isinstance(current, dict) else {}
    changes += [{"field": k, "before": before.get(k), "after": v} for k, v in shown.items()
                if v == REDACTED and k not in listed and is_secret_name(k)]
    return sorted(changes, key=lambda change: change["field"])


def public_view(call: HeldCall) -> dict[str, Any]:
    """The operators' JSON of a held call (as webhooks send it too): secret-named headers,
    query parameters, JSON and form fields redacted; the exact call stays sealed."""
    body_text: str | None
    headers = redact_headers(call.headers)
    body = redacted_body(call.body, headers.get("content-type"))
    try:
        body_text = body.decode("utf-8")
    except UnicodeDecodeError:
        body_text = None
    return {
        "id": call.id, "at": iso(call.at), "status": call.status.value, "agent": call.agent,
        "upstream": call.upstream, "method": call.method, "path": call.raw_path or "/",
        "query": redact_query(call.query), "headers": headers, "body": body_text,
        "body_base64": None if body_text is not None else base64.b64encode(body).decode(),
        "rule": call.rule, "policy_revision": call.policy_revision, "digest": call.digest,
        "run": call.checkpoint.run, "model": call.checkpoint.model,
        "prompt_version": call.checkpoint.prompt_version,
        "tool_version": call.checkpoint.tool_version,
        "required_approvals": call.required,
        "approvals": [v.to_json() for v in call.votes],
        "expires_at": iso(call.expires_at) if call.expires_at else None,
        "decided_by": call.decided_by,
        "decided_at": iso(call.decided_at) if call.decided_at else None,
        "reason": call.reason,
        "response": redacted_response(call.response, sent_secrets(call)),
        "journal_id": call.journal_id,
        "error": call.error, "kind": call.kind,
        "due_at": iso(call.due_at) if call.due_at else None,
        "delay": call.extra.get("delay"), "delay_frozen": call.extra.get("delay_frozen"),
        "delay_failed": call.extra.get("delay_failed"),
        "shadow": call.extra.get("shadow"),
    }


def sent_secrets(call: HeldCall) -> frozenset[str]:
    """The values of the secret-named fields the held call sends (a tool call's
    arguments among them), long enough to look for (``MIN_ECHO``): an answer that
    repeats one must not show it."""
    content_type = next((v for k, v in call.headers if k.lower() == "content-type"), None)
    return frozenset(v for v in secret_values(parse_body(call.body, content_type))
                     if len(v) >= MIN_ECHO)


def redacted_response(response: dict[str, Any] | None,
                      hidden: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """An executed call's stored response, its headers and body redacted for views; a
    tool call's JSON-RPC answer also in its text contents, as the journal has it; and
    any of ``hidden`` (``sent_secrets`` of its call) it repeats, wherever it is."""
    if not isinstance(response, dict):
        return response
    out = dict(response)
    if isinstance(out.get("headers"), dict):
        out["headers"] = redact_headers(out["headers"])
    if isinstance(out.get("body"), str) and out.get("body_encoding") is None:
        headers = out.get("headers")
        content_type = headers.get("content-type") if isinstance(headers, dict) else None
        out["body"] = replace_values(_answer_redacted(redacted_body(
            out["body"].encode(), content_type or "application/json").decode("utf-8", "replace")),
            hidden)
    return out


def _answer_redacted(body: str) -> str:
    """``body`` with the text contents of a JSON-RPC tool answer in it redacted (the SDK
    sends a result's JSON as text beside its structured content)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    shown = mcp.redact_answer(parsed) if isinstance(parsed, dict) else parsed
    return body if shown == parsed else json.dumps(shown, ensure_ascii=False,
                                                   separators=(",", ":"))
