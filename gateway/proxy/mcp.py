"""The MCP reader: an agent's JSON-RPC POST to ``/{upstream}`` becomes calls the pipeline judges.

Streamable HTTP, protocol versions 2025-03-26 through 2026-07-28: each message
of a POST (a batch is judged message by message) becomes one ``Call`` whose
method is the JSON-RPC method; a ``tools/call`` is judged by the upstream's
rules, everything else passes as a read. The pipeline then does what it does
for REST (freeze check, capture, journal, forward, outcome) through the MCP
sender. What only MCP needs happens here, on the way back:

- a denied, frozen or still-held ``tools/call`` is answered with a tool result
  whose ``isError`` is true and whose text names the rule, the freeze, or the
  approval and its status URL, so the model can read it (HTTP 200, the
  decision in ``X-Gateway-Decision``);
- ``tools/list`` answers lose the tools whose every possible decision is deny;
- ``GET`` (the server's stream) and ``DELETE`` (end of a session) are relayed.

Routing headers of 2026-07-28 (``Mcp-Method``, ``Mcp-Name``) must agree with
the body, as the SDK's server requires, so what is judged is what is routed;
a batch's messages are each sent under the batch's headers, so each must agree,
and a batch carries no ``Mcp-Param-*`` (one tool call's arguments).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import mcp_types
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PARAM_HEADER_PREFIX,
    NAME_BEARING_METHODS,
    decode_header_value,
    find_duplicated_routing_header,
)

from gateway.core import mcp
from gateway.core.model import new_id
from gateway.core.policy.compiled import Upstream
from gateway.core.policy.decide import tool_visible
from gateway.core.policy.mcp_schema import TOOLS_CALL
from gateway.errors import (
    BadRequest,
    GatewayError,
    MessageError,
    SessionNotFound,
    UnknownUpstream,
)
from gateway.ports import UpstreamResponse
from gateway.services.call import Call, Policies, Reply, body_reader
from gateway.services.pipeline import Pipeline

SESSION = "mcp-session-id"
MCP_PARAM = MCP_PARAM_HEADER_PREFIX.lower()
# a batch's header: its gravest decision
_SEVERITY = ["allow", "shadow", "hold", "error", "deny", "frozen"]


@dataclass(slots=True)
class _Answered:
    reply: Reply
    message: mcp.Message


class McpReader:
    """Hands each message to ``pipeline``; ``max_body``: the largest POST it reads."""

    def __init__(self, pipeline: Pipeline, policies: Policies, max_body: int) -> None:
        self.pipeline = pipeline
        self.policies = policies
        self._read_body = body_reader(max_body)

    def serves(self, upstream: str) -> bool:
        found = self.policies.current.upstreams.get(upstream)
        return found is not None and found.kind == "mcp"

    async def handle(self, call: Call) -> Reply:
        if call.raw_path not in ("", "/") or call.query and call.method != "GET":
            raise UnknownUpstream(f"an MCP upstream has one endpoint: /{call.upstream}")
        for name, _ in call.headers:  # ``Mcp_Method``: WSGI and CGI read it as Mcp-Method
            if "_" in name and name.replace("_", "-").startswith("mcp-"):
                raise BadRequest(f"header {name!r} spells an MCP header with '_': send it "
                                 "with '-' (an upstream may read both as one)")
        _unseal_session(call)
        reply = await self._handle(call)
        response = reply.response
        if any(k.lower() == SESSION for k, _ in response.headers):
            response.headers = [(k, _seal(call, v) if k.lower() == SESSION else v)
                                for k, v in response.headers]
        return reply

    async def _handle(self, call: Call) -> Reply:
        if call.method in ("GET", "DELETE"):  # the server's stream; the end of a session
            call.mcp = mcp.Message(b"", {}, None, None, http=call.method)
            reply = await self.pipeline.handle(call)
            reply.audits = []
            return reply
        if call.method != "POST":
            raise BadRequest(f"{call.method} is not part of MCP's streamable HTTP")
        duplicated = find_duplicated_routing_header(call.headers)
        if duplicated is not None:
            raise BadRequest(f"{duplicated} appears more than once")
        body = await self._read_body(call)
        try:
            items, batch = mcp.messages(  # exact numbers where a ``when`` compares them
                body, bool(self.policies.current.upstreams[call.upstream].conditions))
        except MessageError as exc:
            raise BadRequest(f"not a JSON-RPC message the gateway can judge: {exc}") from None
        routing = _routing(call)
        if batch and any(name.startswith(MCP_PARAM) for name in routing):
            raise BadRequest("Mcp-Param-* headers belong to one tools/call: a batch cannot "
                             "carry them")
        for item in items:  # each message of a batch is sent on under the batch's headers
            _check_routing(routing, item)
        answered = [await self._one(call, item, batch) for item in items]
        if not batch:
            return answered[0].reply
        return await self._batch_reply(answered)

    async def _one(self, call: Call, message: mcp.Message, batch: bool) -> _Answered:
        one = Call(request_id=new_id() if batch else call.request_id, agent=call.agent,
                   agent_key=call.agent_key, upstream=call.upstream,
                   method=message.method or "POST", raw_path=message.tool or "", query="",
                   headers=[h for h in call.headers if h[0] != "content-length"],
                   checkpoint=call.checkpoint, buffered=message.raw, mcp=message,
                   link=call.link)
        if message.method != TOOLS_CALL:
            reply = await self.pipeline.handle(one)
            if message.method == "tools/list":
                reply = await self._listed(reply, call.agent, call.upstream)
            reply.audits = []
            return _Answered(reply, message)
        try:
            reply = await self.pipeline.handle(one)
        except GatewayError as exc:
            rule = exc.extra.get("rule")
            text = f"{exc.message} (gateway: {exc.code}" + (f", rule {rule})" if rule else ")")
            reply = self._refusal(message, exc.decision, text)
        else:
            if reply.decision == "hold":  # still pending: tell the model where it stands
                held = json.loads(reply.response.body or b"{}").get("approval", {})
                url = _absolute(call, str(held.get("status_url", "")))
                if held.get("due_at"):  # action: delay
                    text = (f"delayed: approval {held.get('id')} runs by itself at "
                            f"{held['due_at']} unless an operator rejects it first; its "
                            f"status: GET {url}")
                else:
                    text = (f"held for approval: approval {held.get('id')} is "
                            f"{held.get('status')}; its status: GET {url} (the call runs "
                            "once, if an operator approves it)")
                reply = self._refusal(message, "hold", text)
        if not batch:  # the call's metrics (would_decide) are this message's
            call.facts = one.facts
        reply.audits = [(reply.decision, {"method": TOOLS_CALL, "path": message.tool,
                                          **one.facts, "status": reply.response.status,
                                          **({"journal": reply.journal_id}
                                             if reply.journal_id else {})})]
        return _Answered(reply, message)

    def _refusal(self, message: mcp.Message, decision: str, text: str) -> Reply:
        if not message.is_request:  # a notification has no answer to carry the refusal
            return Reply(UpstreamResponse(202, [], body=b""), decision)
        result = mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], is_error=True)
        answer = mcp_types.JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result.model_dump(
            by_alias=True, mode="json", exclude_none=True))
        body = answer.model_dump_json(by_alias=True, exclude_none=True).encode()
        return Reply(UpstreamResponse(200, [("content-type", "application/json")], body=body),
                     decision)

    async def _listed(self, reply: Reply, agent: str, name: str) -> Reply:
        """The tools the agent may call, in a JSON or an SSE answer alike."""
        upstream = self.policies.current.upstreams[name]
        response = reply.response
        body = await response.read()
        content_type = next((v for k, v in response.headers if k.lower() == "content-type"), "")
        sse = content_type.split(";")[0].strip().lower() == mcp.SSE
        items = mcp.sse_messages(body) if sse else [_json_or_none(body)]
        filtered = [_visible_only(item, upstream, agent) for item in items]
        if sse:
            data = "".join(f"event: message\ndata: {json.dumps(m)}\n\n" for m in filtered).encode()
        elif filtered[0] is not None:
            data = json.dumps(filtered[0]).encode()
        else:
            data = body
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
        reply.response = UpstreamResponse(response.status, headers, body=data)
        return reply

    async def _batch_reply(self, answered: list[_Answered]) -> Reply:
        answers, headers = [], [("content-type", "application/json")]
        for item in answered:
            response = item.reply.response
            body = await response.read()
            content_type = next((v for k, v in response.headers
                                 if k.lower() == "content-type"), None)
            session = [(k, v) for k, v in response.headers if k.lower() == "mcp-session-id"]
            if session:
                headers = [("content-type", "application/json"), *session[:1]]
            if item.message.is_request:
                answer = mcp.response_in(body, content_type, item.message.id)
                answers.append(answer if answer is not None else _no_answer(item, response.status))
        decision = max((a.reply.decision for a in answered), key=_SEVERITY.index)
        audits = [record for a in answered for record in (a.reply.audits or [])]
        if not answers:
            return Reply(UpstreamResponse(202, headers[1:], body=b""), decision, audits=audits)
        return Reply(UpstreamResponse(200, headers, body=json.dumps(answers).encode()), decision,
                     audits=audits)


def _routing(call: Call) -> dict[str, str]:
    """The call's routing headers (``Mcp-Method``, ``Mcp-Name``, ``Mcp-Param-*``)."""
    return {name: value for name, value in call.headers
            if name in (MCP_METHOD_HEADER, MCP_NAME_HEADER) or name.startswith(MCP_PARAM)}


def _check_routing(routing: dict[str, str], message: mcp.Message) -> None:
    """Routing headers must say what the message says, as the SDK's server requires: an
    intermediary or server that routes by them then does what was judged. ``Mcp-Name``
    names what a name-bearing method names (the tool, the prompt, the resource)."""
    method = routing.get(MCP_METHOD_HEADER)
    if method is not None and method != message.method:
        raise BadRequest(f"{MCP_METHOD_HEADER} {method!r} differs from the body's method "
                         f"{message.method!r}")
    name = routing.get(MCP_NAME_HEADER)
    if name is None:
        return
    key = NAME_BEARING_METHODS.get(message.method or "")
    params = message.value.get("params")
    named = params.get(key) if key is not None and isinstance(params, dict) else None
    if named is None or decode_header_value(name) != named:
        raise BadRequest(f"{MCP_NAME_HEADER} differs from what the body's "
                         f"{message.method or 'message'} names")


def _seal(call: Call, session: str) -> str:
    """The session id as its agent sees it: bound to the agent's key, so another agent
    holding it cannot use it (and any gateway process can check it, no state kept)."""
    key = (call.agent_key or call.agent).encode()
    return f"{session}.{hmac.new(key, session.encode(), hashlib.sha256).hexdigest()[:32]}"


def _unseal_session(call: Call) -> None:
    """The upstream's session id back in the call, or 404 when it is not this agent's."""
    for index, (name, value) in enumerate(call.headers):
        if name != SESSION:
            continue
        session = value.strip().rpartition(".")[0]
        if not session or not hmac.compare_digest(_seal(call, session), value.strip()):
            raise SessionNotFound("no such MCP session for this agent (a session belongs to "
                                  "the agent that opened it)")
        call.headers[index] = (name, session)


def _no_answer(item: _Answered, status: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": item.message.id,
            "error": {"code": mcp_types.INTERNAL_ERROR,
                      "message": f"the server answered HTTP {status} without a JSON-RPC response"}}


def _visible_only(message: Any, upstream: Upstream, agent: str) -> Any:
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return message
    tools = [t for t in result["tools"]
             if isinstance(t, dict) and tool_visible(upstream, agent, str(t.get("name")))]
    scope = {"cacheScope": "private"} if "cacheScope" in result else {}  # the list is the agent's
    return {**message, "result": {**result, "tools": tools, **scope}}


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _absolute(call: Call, path: str) -> str:
    host = dict(call.headers).get("host")
    return f"http://{host}{path}" if host else path
