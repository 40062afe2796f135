"""A held call as kept, shown and audited.

Kept: exactly as the agent sent it, minus hop-by-hop headers and the
gateway's own, bound to its digest (``held_call``); once executed, the
upstream's answer is kept for the agent to read (``stored_response``) and
replayed to it (``agent_reply``). Shown: what operators see before they
decide, the target's current state (read as the capture would) and the
change field by field (``proposed``). Audited: every transition, with the
change (``core.approvals.audit_item``). The queue that moves held calls through their states is
``gateway.services.approvals``.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.core import journal as journaling
from gateway.core.approvals import (
    ApprovalStatus,
    HeldCall,
    agent_status,
    proposed_changes,
    request_digest,
)
from gateway.core.headers import HOP_BY_HOP
from gateway.core.model import Decision, iso, new_id, utcnow
from gateway.core.policy.compiled import Upstream
from gateway.core.policy.schema import Approval
from gateway.errors import ApprovalPending, ApprovalRejected, GatewayError
from gateway.ports import UpstreamResponse
from gateway.services.call import Call, Reply, Sender

log = logging.getLogger("gateway.approvals")


def kept_headers(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The agent's headers as held: no hop-by-hop, nothing of the gateway's (its key
    is already gone). Secret-named ones are kept, so approving sends what the agent
    sent: views show them redacted and the store keeps them sealed."""
    return tuple((k, v) for k, v in headers
                 if k not in HOP_BY_HOP and k not in ("host", "content-length")
                 and not k.startswith(("x-gateway-", "x-agent-")))


def held_call(upstream: Upstream, call: Call, decision: Decision, spec: Approval,
              **values: Any) -> HeldCall:
    """The call exactly as the agent sent it (minus secret headers), digest-bound."""
    now = utcnow()
    headers = kept_headers(call.headers)
    body = call.buffered or b""
    fields: dict[str, Any] = dict(
        id=new_id(), at=now, agent=call.agent, upstream=upstream.name, method=call.method,
        raw_path=call.raw_path, query=call.query, headers=headers, body=body,
        checkpoint=call.checkpoint, rule=decision.rule, policy_revision=decision.revision,
        digest=request_digest(call.method, upstream.name, call.raw_path, call.query,
                              headers, body),
        required=spec.approvers, roles=spec.roles, operators=spec.operators,
        expires_at=now + timedelta(seconds=spec.expires) if spec.expires else None)
    return HeldCall(**{**fields, **values})


def stored_response(response: UpstreamResponse) -> dict[str, Any]:
    body = response.body or b""
    try:
        text, encoding = body.decode("utf-8"), None
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    headers = {k.lower(): v for k, v in response.headers
               if k.lower() not in HOP_BY_HOP and not k.lower().startswith("x-gateway-")
               and k.lower() != "set-cookie"}
    return {"status": response.status, "headers": headers, "body": text,
            "body_encoding": encoding}


def replayed(stored: dict[str, Any]) -> UpstreamResponse:
    raw = stored.get("body") or ""
    body = base64.b64decode(raw) if stored.get("body_encoding") == "base64" else raw.encode()
    headers = [(k, v) for k, v in stored.get("headers", {}).items() if k != "content-length"]
    return UpstreamResponse(stored["status"], headers, body=body)


def agent_reply(held: HeldCall, error: bool = False) -> Reply:
    """What the agent is answered: the kept answer once executed, ``ApprovalRejected``
    once rejected, else 202 with where to look (``ApprovalPending`` with
    ``answer: error``)."""
    if held.status is ApprovalStatus.EXECUTED and held.response is not None:
        return Reply(replayed(held.response), "allow", journal_id=held.journal_id)
    if held.status is ApprovalStatus.REJECTED:
        raise ApprovalRejected(f"approval {held.id} was rejected"
                               + (f": {held.reason}" if held.reason else ""),
                               approval=held.id)
    status_url = f"/_gateway/approvals/{held.id}"
    if error:  # approval: {answer: error}: a status SDKs raise, so the model hears of it
        raise ApprovalPending(
            f"held for approval {held.id} ({agent_status(held.status)}); status at "
            f"{status_url}. Do not resend: the gateway runs it once if it is approved",
            approval=held.id, status=agent_status(held.status), status_url=status_url)
    body: dict[str, Any] = {"approval": {"id": held.id, "status": agent_status(held.status),
                                         "status_url": status_url}}
    if held.due_at is not None:  # action: delay: it runs then unless an operator rejects it
        body["approval"]["due_at"] = iso(held.due_at)
    response = UpstreamResponse(202, [("content-type", "application/json"),
                                      ("location", status_url)],
                                body=json.dumps(body).encode())
    return Reply(response, "hold")


@dataclass(frozen=True, slots=True)
class Proposed:
    current: Any  # the target's state now, as the capture reads it (None: not read)
    changes: Any  # ``core.approvals.field_changes`` of the call over it
    problem: str | None = None  # why the state could not be read


async def proposed(held: HeldCall, upstream: Upstream | None,
                   sender: Sender | None) -> Proposed:
    """The change a held call would make, over the target's current state (read through
    its upstream's ``sender``, as the capture would; nothing when it is gone)."""
    current, problem = None, None
    if upstream is not None and sender is not None:
        rule = upstream.rule(held.rule)
        call = sender.rebuilt(held, new_id())
        seen = sender.view(call)
        params = sender.params(upstream, held.rule, seen) or {}
        try:
            target = journaling.capture_path(rule, held.method, seen.path, params,
                                             seen.body) or (
                seen.path if held.method == "POST" else None)
        except KeyError as exc:
            target, problem = None, f"the capture needs {{{exc.args[0]}}}"
        if target is not None and held.method != "POST":
            try:
                current = (await sender.capture(upstream, call, target)).value
            except GatewayError as exc:
                problem = exc.message
    return Proposed(current, proposed_changes(held, current), problem)
