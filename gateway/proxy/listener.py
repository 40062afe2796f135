"""The agent listener: raw ASGI, because on the hot path every layer costs.

Measured here, FastAPI routing alone costs three times raw ASGI, so the
agent side parses the scope itself: ``/{upstream}/{rest}`` routing, agent
authentication, the gateway's own ``/_gateway/*`` routes, and the one place
where ``GatewayError`` becomes the contract's JSON error. Calls to an MCP
upstream are read by ``gateway.proxy.mcp`` (after the same authentication).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from gateway.core import canonical
from gateway.core.headers import Identity, agent_response_headers, identify
from gateway.core.model import Checkpoint, is_mutating, new_id
from gateway.errors import (
    Ambiguous,
    AmbiguousIdentity,
    BadRequest,
    GatewayError,
    MethodRefused,
    Unauthenticated,
    UnknownUpstream,
)
from gateway.observe import NO_OBSERVER, CallRecord, Observer, Watch
from gateway.ports import UpstreamResponse
from gateway.proxy.mcp import McpReader
from gateway.services.audit_trail import AuditTrail
from gateway.services.call import Call, Policies, Reply
from gateway.services.pipeline import Pipeline

log = logging.getLogger("gateway.proxy")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_UPSTREAM = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_JSON = [(b"content-type", b"application/json")]
REFUSED_METHODS = frozenset({"TRACE", "TRACK", "CONNECT", "DEBUG"})
# After these the connection is closed: a request the gateway could not read one way
# (or whose body it did not read) must not decide how the bytes behind it are framed.
_CLOSE_AFTER = frozenset({400, 405, 408, 413})


class AgentDirectory:
    """Agent keys are held as sha256 digests and compared in constant time."""

    def __init__(self, agents: list[tuple[str, str]], allow_anonymous: bool) -> None:
        self._agents = [(name, bytes.fromhex(digest)) for name, digest in agents]
        self.allow_anonymous = allow_anonymous

    def identify(self, key: str | None) -> str:
        if key is None or key == "":
            if self.allow_anonymous:
                return "anonymous"
            raise Unauthenticated("an agent key is required (X-Gateway-Key, X-Api-Key or "
                                  "Authorization: Bearer, token, Basic or AWS SigV4)")
        found = self._name(key)
        if found is None:
            raise Unauthenticated("unknown agent key")
        return found

    def _name(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for name, expected in self._agents:  # no early exit: timing does not reveal which
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found

    def presented(self, headers: list[tuple[str, str]], query: str = "") -> Identity:
        """The call's one key, and its headers and query without it (400 on two)."""
        try:
            return identify(headers, query, lambda key: self._name(key) is not None)
        except AmbiguousIdentity as exc:
            raise BadRequest(str(exc)) from None


class ProxyApp:
    def __init__(self, pipeline: Pipeline, policies: Policies, agents: AgentDirectory,
                 own_routes: Callable[[str, str, str], Awaitable[tuple[int, Any]]] | None = None,
                 observer: Observer = NO_OBSERVER, audit: AuditTrail | None = None,
                 mcp: McpReader | None = None) -> None:
        self.pipeline = pipeline
        self.policies = policies
        self.agents = agents
        self.own_routes = own_routes
        self.observer = observer  # metrics, tracing, access log: told once per call
        self.audit = audit
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = new_id()
        upstream = scope["path"][1:].partition("/")[0]
        if upstream not in self.policies.current.upstreams:
            upstream = "_other"  # bounded label set, whatever agents send
        watch = self.observer.begin(scope["headers"])
        record = CallRecord(request_id, None, upstream, scope["method"], scope["path"])
        try:
            await self._respond(scope, receive, send, watch, record)
        finally:
            record.agent = scope.get("gateway.agent")
            facts = _facts(scope)
            record.mode, record.would_decide = facts.get("mode"), facts.get("would_decide")
            watch.finish(record)

    async def _respond(self, scope: Scope, receive: Receive, send: Send, watch: Watch,
                       record: CallRecord) -> None:
        request_id = record.request_id
        try:
            reply = await self._handle(scope, receive, request_id, watch)
        except GatewayError as exc:
            record.decision, record.status = exc.decision, exc.status
            await self._audit(scope, request_id, exc.decision, exc.status,
                              {"code": exc.code, **exc.extra})
            await _error(send, exc, request_id, self._aws_shape(scope))
            return
        except Exception:
            log.exception("unexpected error handling %s %s", scope.get("method"), scope.get("path"))
            await self._audit(scope, request_id, "error", 500, {"code": "internal_error"})
            await _error(send, GatewayError("internal error"), request_id)
            return
        record.decision, record.status = reply.decision, reply.response.status
        await self._audit(scope, request_id, reply.decision, reply.response.status,
                          {"journal": reply.journal_id} if reply.journal_id else {}, reply.audits)
        await _stream(send, reply, request_id, scope["method"] == "HEAD",
                      scope.get("gateway.hold_head"))

    def _aws_shape(self, scope: Scope) -> str | None:
        """How an AWS SDK reads the call's errors, when its upstream signs for an AWS
        service (``aws_sigv4``): ``s3`` (S3's XML), ``json`` (the JSON protocol: the call
        names its operation in ``X-Amz-Target`` or is sent as ``x-amz-json``) or
        ``query`` (the query APIs' XML); None for any other upstream (the contract's
        JSON)."""
        upstream = self.policies.current.upstreams.get(scope["path"][1:].partition("/")[0])
        sigv4 = upstream.credential.sigv4 if upstream and upstream.credential else None
        if sigv4 is None:
            return None
        if sigv4.service.startswith("s3"):
            return "s3"
        for name, value in scope["headers"]:
            if name.replace(b"_", b"-") == b"x-amz-target" or (
                    name == b"content-type" and value.startswith(b"application/x-amz-json")):
                return "json"
        return "query"

    async def _audit(self, scope: Scope, request_id: str, decision: str, status: int,
                     detail: dict[str, Any],
                     records: list[tuple[str, dict[str, Any]]] | None = None) -> None:
        """Every decision on a write (a mutating method, or a call the policy calls a
        write) goes to the audit chain (batched), naming its journal entry; a reader
        that judged several calls in one request (MCP) names them in ``records``."""
        if self.audit is None:
            return
        agent = scope.get("gateway.agent") or "unknown"
        if records is not None:
            for verdict, what in records:
                await self.audit.record(agent, f"call.{verdict}", {"request_id": request_id,
                                                                   **what})
            return
        call = scope.get("gateway.call")
        if not is_mutating(scope["method"]) and not (call is not None and call.writes):
            return  # a read (a GET the policy calls a write is audited: it is journaled)
        await self.audit.record(agent, f"call.{decision}", {
            "request_id": request_id, "method": scope["method"], "path": scope["path"],
            **_facts(scope), "status": status, **detail})

    async def _handle(self, scope: Scope, receive: Receive, request_id: str,
                      watch: Watch) -> Reply:
        raw = scope.get("raw_path") or quote(scope["path"]).encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        if not raw_path.startswith("/") or scope.get("gateway.absolute_form"):
            raise BadRequest("only origin-form request targets are accepted (GET /crm/..., "
                             "not GET http://host/crm/...)")
        method = scope["method"].upper()
        if method in REFUSED_METHODS:
            raise MethodRefused(f"{method} is not allowed through the gateway")
        upstream, _, rest = raw_path[1:].partition("/")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in scope["headers"]]
        if upstream == "_gateway":
            return await self._own(rest, headers, scope["method"])
        seen = self.agents.presented(headers, scope.get("query_string", b"").decode("latin-1"))
        key, headers = seen.key, seen.headers  # the key is nowhere in the call from here on
        agent = self.agents.identify(key)
        scope["gateway.agent"] = agent
        if not _UPSTREAM.match(upstream):
            raise UnknownUpstream(f"no upstream named {upstream!r}")
        try:  # computed once: what is judged, journaled and forwarded
            target = canonical.target("/" + rest if rest else "")
        except Ambiguous as exc:
            raise BadRequest(str(exc)) from None
        if key and key in target.decoded:  # it would be forwarded and journaled
            raise BadRequest("the agent key is in the path: it would reach the upstream")
        query = seen.query  # without the agent's key, if it came as a query parameter
        override = canonical.method_override(query)
        if override is not None:
            raise BadRequest(f"query parameter {override!r} is a method override: the policy "
                             "judges the request method")
        get = {k: v for k, v in headers if k.startswith("x-agent-")}.get
        call = Call(
            request_id=request_id, agent=agent, agent_key=key, upstream=upstream,
            method=method, raw_path=target.encoded, target=target, query=query, headers=headers,
            checkpoint=Checkpoint(get("x-agent-run"), get("x-agent-model"),
                                  get("x-agent-prompt-version"), get("x-agent-tool-version")),
            body=_body(receive) if _has_body(headers) else None, link=scope.get("gateway.link"))
        call.watch = watch
        scope["gateway.call"] = call  # its facts (what was decided) go to the audit record
        if self.mcp is not None and self.mcp.serves(upstream):
            return await self.mcp.handle(call)
        return await self.pipeline.handle(call)

    async def _own(self, rest: str, headers: list[tuple[str, str]], method: str) -> Reply:
        if rest == "health":
            body = {"status": "ok", "policy_revision": self.policies.current.revision}
            return Reply(_json_response(200, body), "allow")
        if self.own_routes is not None:
            agent = self.agents.identify(self.agents.presented(headers).key)
            status, body = await self.own_routes(method, rest, agent)
            return Reply(_json_response(status, body), "allow")
        raise UnknownUpstream(f"no gateway route /_gateway/{rest}")


def _facts(scope: Scope) -> dict[str, Any]:
    """What the pipeline recorded about the decision (upstream, rule, mode, would_decide)."""
    call = scope.get("gateway.call")
    return call.facts if call is not None else {}


def _has_body(headers: list[tuple[str, str]]) -> bool:
    for name, value in headers:
        if name == "content-length":
            return value.strip() != "0"
        if name == "transfer-encoding":
            return True
    return False


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the agent went away while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _json_response(status: int, body: Any) -> UpstreamResponse:
    data = json.dumps(body).encode()
    return UpstreamResponse(status, [("content-type", "application/json")], body=data)


def _gateway_headers(decision: str, request_id: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-gateway-decision", decision.encode()),
            (b"x-gateway-request-id", request_id.encode())]


async def _error(send: Send, exc: GatewayError, request_id: str,
                 aws: str | None = None) -> None:
    """``aws`` (``ProxyApp._aws_shape``): the error in the shape the AWS SDK reads."""
    if aws is None:
        data, kind = json.dumps(exc.body()).encode(), _JSON
    elif aws == "json":
        data = exc.aws_json()
        kind = [(b"content-type", b"application/x-amz-json-1.0"),
                (b"x-amzn-errortype", exc.aws_code.encode()),
                (b"x-amzn-requestid", request_id.encode())]
    else:  # S3's own XML, else the query APIs' (botocore reads no other shape)
        data = exc.s3_xml(request_id) if aws == "s3" else exc.query_xml(request_id)
        kind = [(b"content-type", b"application/xml")]
    headers = kind + [(b"content-length", str(len(data)).encode())]
    if exc.status in _CLOSE_AFTER:
        headers.append((b"connection", b"close"))
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if exc.retry is False:  # the SDKs that read these (Stainless-made, Stripe's) resend not
        headers += [(b"x-should-retry", b"false"), (b"stripe-should-retry", b"false")]
    await send({"type": "http.response.start", "status": exc.status,
                "headers": headers + _gateway_headers(exc.decision, request_id)})
    await send({"type": "http.response.body", "body": data})


async def _stream(send: Send, reply: Reply, request_id: str, head: bool,
                  hold_head: Callable[[], None] | None = None) -> None:
    """``hold_head`` (the connection's, when it has one): a whole body follows the head at
    once, so both go out in one write (``gateway.proxy.connection``)."""
    response = reply.response
    headers = []
    length = False
    for name, value in agent_response_headers(response.headers):
        low = name.lower()
        length = length or low == "content-length"
        headers.append((low.encode("latin-1"), value.encode("latin-1")))
    if response.body is not None and not length:
        headers.append((b"content-length", str(len(response.body)).encode()))
    whole = response.body is not None or head
    if whole and hold_head is not None:
        hold_head()
    await send({"type": "http.response.start", "status": response.status,
                "headers": headers + _gateway_headers(reply.decision, request_id)})
    if whole:
        if response.stream is not None:
            await response.read()  # release the connection
        await send({"type": "http.response.body", "body": b"" if head else response.body or b""})
        return
    assert response.stream is not None
    async for chunk in response.stream:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
