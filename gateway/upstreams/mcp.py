"""The MCP sender: how the pipeline reads and reaches an MCP server (``kind: mcp``).

A call is one JSON-RPC message (``gateway.proxy.mcp`` reads them): its view is
the method, for a tool call the tool and its arguments; a rule matches by
tool, and a tool call writes unless its rule's ``effect`` is ``read``.
An agent's messages are relayed as they came (its session id and protocol
version headers pass through; its key never does): reads stream back as the
server sends them, a judged ``tools/call`` is read whole so its result can be
journaled. The gateway's own calls (the capture tool, an approved call, a
re-read after a write or before a compensation, the undo tool) go through the
``mcp`` SDK's client, which negotiates the newest protocol version the server
offers (``server/discover`` for 2026-07-28, else the ``initialize`` handshake);
the outcome is remembered per upstream so later calls skip the probe. Reads
(the capture tool, re-reads) share one kept connection per upstream; a call
that changes something (an approved call, a compensation) gets a connection
of its own and is sent at most once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.core import mcp, shadow
from gateway.core.approvals import HeldCall
from gateway.core.body import parse_body
from gateway.core.model import JournalEntry
from gateway.core.policy.compiled import CallView, Upstream
from gateway.core.policy.mcp_schema import TOOLS_CALL
from gateway.core.redact import redact_text
from gateway.core.rollback import Step
from gateway.errors import (
    CaptureFailed,
    ConnectTimeout,
    GatewayError,
    UpstreamLost,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.ports import Headers, Observed, UpstreamResponse, untraced
from gateway.ports import Upstream as UpstreamClient
from gateway.services.call import Answer, BodyReader, Call, plain_answer
from gateway.settings import Settings
from gateway.upstreams.rest import rebuilt, request_headers, unechoed

log = logging.getLogger("gateway.mcp")
_JSON = [("content-type", "application/json")]


class McpSender:
    def __init__(self, settings: Settings, client: UpstreamClient) -> None:
        self.settings = settings
        self.client = client
        # upstream -> how to connect next time: "auto" (probe), "legacy", or a modern version
        self._eras: dict[str, tuple[str, mcp_types.DiscoverResult | None]] = {}
        self._connections: dict[str, _Connection] = {}  # kept for the gateway's reads

    def _timeout(self, upstream: Upstream) -> float:
        return upstream.spec.timeout or self.settings.upstream_timeout

    # -- reading a call ----------------------------------------------------------------

    def view(self, call: Call) -> CallView:
        message = call.mcp  # the JSON-RPC method; for a tool call its tool and arguments
        if message is None:
            return CallView(call.method, "", [], {}, dict(call.headers), call.agent)
        return CallView(message.method or call.method, message.tool or "", [], {},
                        dict(call.headers), call.agent, message.arguments)

    async def judged(self, upstream: Upstream, call: Call, view: CallView,
                     candidates: list[tuple[int, dict[str, str]]], read: BodyReader,
                     writes: bool) -> CallView:
        return view  # the reader read the message whole

    def rebuilt(self, held: HeldCall, request_id: str) -> Call:
        call = rebuilt(held, request_id)
        call.mcp = mcp.message(mcp.decode(held.body), held.body)
        return call

    def held_view(self, upstream: Upstream, call: Call) -> CallView:
        return self.view(call)

    def params(self, upstream: Upstream, rule_id: str | None,
               view: CallView) -> dict[str, str] | None:
        matched = next((p for index, p in upstream.trie.match(view.segments)
                        if upstream.spec.rules[index].id == rule_id), None)
        if matched is None and upstream.rule(rule_id) is not None:
            return {}  # tools are not matched by path
        return matched

    def writes(self, upstream: Upstream, rule_id: str | None, method: str) -> bool:
        return getattr(upstream.rule(rule_id), "effect", None) != "read"

    def projection(self, upstream: Upstream, call: Call, view: CallView,
                   entry: JournalEntry) -> shadow.Projection:
        message = call.mcp
        assert message is not None
        projected = shadow.project_tool(message.id, entry.prior, entry.prior_status,
                                        message.arguments or {}, entry.id)
        result = (projected.value or {}).get("result", {})
        entry.after = result.get("structuredContent")  # the state the tool would leave
        return projected

    def answer(self, method: str, body: bytes, content_type: str | None,
               sent: Any = None) -> Answer:
        if method != TOOLS_CALL:
            return plain_answer(body, content_type)
        response = mcp.response_in(body, content_type, mcp.ANY_ID)  # JSON, or out of SSE
        failed = mcp.failure(response, sent)  # a tool reports failure in a 200
        if response is not None:
            body, content_type = json.dumps(response).encode(), mcp.JSON
        parsed = parse_body(body, content_type)
        # a secret in a tool's text is one too, and so is a secret argument it repeats
        shown = mcp.redact_answer(response if failed is not None else parsed, sent)
        return Answer(body, content_type, parsed, shown, failed, False, True)

    # -- the agent's own messages ---------------------------------------------------

    async def relay(self, upstream: Upstream, call: Call,
                    trace: Callable[[Headers], Headers] = untraced) -> UpstreamResponse:
        http = call.mcp.http if call.mcp is not None else call.method
        hidden = upstream.echoes
        headers = request_headers(upstream, call, drop_encoding=hidden is not None)
        if hidden is not None:  # an echo in a compressed body would not be seen
            headers.append(("accept-encoding", "identity"))
        response = await self.client.request(
            http, upstream.base_url, trace(headers),
            call.buffered if http == "POST" else None, stream=True,
            timeout=self._timeout(upstream))
        return response if hidden is None else await unechoed(response, hidden, http)

    async def forward(self, upstream: Upstream, call: Call, approved: bool,
                      trace: Callable[[Headers], Headers] = untraced) -> UpstreamResponse:
        if not approved:
            response = await self.client.request(
                "POST", upstream.base_url, trace(request_headers(upstream, call, drop_encoding=True)),
                call.buffered, timeout=self._timeout(upstream))
            hidden = upstream.echoes
            return response if hidden is None else await unechoed(response, hidden, "POST")
        # An approved call: the agent's session may be long gone, so the gateway makes
        # the call itself; the answer carries the agent's request id.
        message = call.mcp
        assert message is not None and message.tool is not None
        answer = await self.call_tool(upstream, message.tool, message.arguments or {},
                                      self._timeout(upstream), keyed=call.idempotency)
        return UpstreamResponse(200, list(_JSON), body=json.dumps({**answer, "id": message.id})
                                .encode())

    # -- the gateway's own calls ----------------------------------------------------

    async def capture(self, upstream: Upstream, call: Call, target: str,
                      trace: Callable[[Headers], Headers] = untraced) -> Observed:
        tool, arguments = mcp.decode_target(target)
        try:
            answer = await self.call_tool(upstream, tool, arguments,
                                          self.settings.capture_timeout, fresh=False)
        except GatewayError as exc:
            raise CaptureFailed(f"capture tool {tool} failed ({exc.message}); "
                                "the write was not sent") from exc
        failed = mcp.failure(answer, arguments)
        if failed is not None:
            raise CaptureFailed(f"capture tool {tool}: {failed}; the write was not sent")
        return _observed(answer.get("result"))

    async def read(self, upstream: Upstream, target: str) -> Observed:
        if not mcp.is_target(target):  # no capture tool: the state cannot be read
            return Observed(200, None, None)
        tool, arguments = mcp.decode_target(target)
        answer = await self.call_tool(upstream, tool, arguments, self.settings.capture_timeout,
                                      fresh=False)
        failed = mcp.failure(answer, arguments)
        if failed is not None:
            return Observed(502, failed, None)
        return _observed(answer.get("result"))

    def own_headers(self, upstream: Upstream, content_type: str | None) -> list[tuple[str, str]]:
        return list(_credential(upstream).items())

    async def compensate(self, upstream: Upstream, step: Step, headers: list[tuple[str, str]],
                         body: bytes | None) -> UpstreamResponse:
        arguments = step.body if isinstance(step.body, dict) else {}
        keyed = upstream.idempotency_header(None)  # a compensation is a write too
        key = next((value for name, value in headers if name.lower() == keyed), None)
        answer = await self.call_tool(upstream, step.path, arguments,
                                      self.settings.upstream_timeout,
                                      keyed=(keyed, key) if keyed and key else None)
        return UpstreamResponse(200, list(_JSON), body=json.dumps(answer).encode())

    async def call_tool(self, upstream: Upstream, tool: str, arguments: dict[str, Any],
                        timeout: float, fresh: bool = True,
                        keyed: tuple[str, str] | None = None) -> dict[str, Any]:
        """One ``tools/call`` by the gateway: the JSON-RPC response as a dict (``result``
        or ``error``). ``fresh``: on a connection of its own, sent at most once (approved
        calls, compensations); else on the upstream's kept connection, retried once on a
        new one if that failed (reads: the capture tool, drift checks). A failure once the
        call may have been sent is ``UpstreamLost`` or ``UpstreamTimeout`` (outcome
        unknown); only one while connecting is ``UpstreamUnreachable`` (not sent).
        ``keyed``: the policy's idempotency header and its value, set on the ``tools/call``
        request of a fresh connection (its session's own requests go without it)."""
        answer = await self._call_tool(upstream, tool, arguments, timeout, fresh, keyed)
        hidden = upstream.echoes  # the server may echo the credential it was sent
        return answer if hidden is None else dict(hidden.value(answer))

    async def _call_tool(self, upstream: Upstream, tool: str, arguments: dict[str, Any],
                         timeout: float, fresh: bool,
                         keyed: tuple[str, str] | None) -> dict[str, Any]:
        attempts = 1 if fresh else 2
        for attempt in range(attempts):
            connection = (_Connection(upstream, *self._eras.get(upstream.name, ("auto", None)),
                                      keyed=keyed)
                          if fresh else await self._kept(upstream))
            sending = not fresh
            try:
                with anyio.fail_after(timeout):
                    if fresh:
                        await connection.open(timeout)
                        sending = True
                    result = await connection.client.call_tool(tool, arguments)
                return {"jsonrpc": "2.0", "id": None,
                        "result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
            except Exception as exc:  # timeouts, httpx2 and anyio errors, a server gone odd
                if isinstance(exc, MCPError) and exc.code != mcp_types.CONNECTION_CLOSED:
                    return {"jsonrpc": "2.0", "id": None,  # the server's own answer
                            "error": {"code": exc.code, "message": exc.message}}
                # ... else the SDK's word that the connection closed under the request
                # (an MCPError, as if answered): no answer came, as with a reset
                await self._drop(upstream.name, connection)
                if attempt + 1 < attempts:
                    continue
                where = f"tools/call {tool} on {upstream.name}"
                if isinstance(exc, TimeoutError):
                    if not sending:
                        raise ConnectTimeout(f"{where}: no session in time; not sent") from exc
                    raise UpstreamTimeout(f"{where} timed out; the outcome is unknown") from exc
                log.warning("tools/call %s on %s failed: %s", tool, upstream.name,
                            _quoted(upstream, repr(exc)))  # it may quote the server
                if sending:
                    raise UpstreamLost(f"{where} failed after it was sent "
                                       f"({type(exc).__name__}); the outcome is unknown") from exc
                raise UpstreamUnreachable(f"{where} failed: {type(exc).__name__}; "
                                          "not sent") from exc
            finally:
                if fresh:
                    await connection.close()
                    self._learn(upstream.name, connection)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _kept(self, upstream: Upstream) -> _Connection:
        key = (upstream.base_url, tuple(_credential(upstream).items()))
        connection = self._connections.get(upstream.name)
        if connection is not None and connection.key == key:
            return connection
        if connection is not None:  # the policy changed the URL or the credential
            await self._drop(upstream.name, connection)
        connection = _Connection(upstream, *self._eras.get(upstream.name, ("auto", None)))
        self._connections[upstream.name] = connection
        await connection.open(self.settings.capture_timeout)
        self._learn(upstream.name, connection)
        return connection

    def _learn(self, name: str, connection: _Connection) -> None:
        if connection.era is not None:
            self._eras[name] = connection.era

    async def _drop(self, name: str, connection: _Connection) -> None:
        self._eras.pop(name, None)  # negotiate afresh: the server may have changed
        if self._connections.get(name) is connection:
            del self._connections[name]
        await connection.close()

    async def close(self) -> None:
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            await connection.close()


class _Connection:
    """One SDK client to one upstream. Entered and left in a task of its own, since
    the SDK's task groups must be left by the task that entered them."""

    def __init__(self, upstream: Upstream, mode: str,
                 prior: mcp_types.DiscoverResult | None,
                 keyed: tuple[str, str] | None = None) -> None:
        self.url, self.headers = upstream.base_url, _credential(upstream)
        self.keyed = keyed  # set on its tools/call requests only (``_key``)
        self.key = (self.url, tuple(self.headers.items()))
        self.mode, self.prior = mode, prior
        self.era: tuple[str, mcp_types.DiscoverResult | None] | None = None
        self._client: Client | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "open() first"
        return self._client

    async def open(self, timeout: float) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(self._ready, timeout))
        await asyncio.shield(self._ready)

    async def _run(self, ready: asyncio.Future[None], timeout: float) -> None:
        try:
            hooks = {"request": [self._key]} if self.keyed is not None else {}
            async with httpx2.AsyncClient(headers=self.headers, event_hooks=hooks,
                                          timeout=httpx2.Timeout(timeout)) as http:
                async with Client(streamable_http_client(self.url, http_client=http),
                                  mode=self.mode, prior_discover=self.prior, cache=None) as client:
                    found = client.session.discover_result
                    self.era = ((client.protocol_version, found) if found is not None
                                else ("legacy", None))
                    self._client = client
                    ready.set_result(None)
                    await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the connection
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else
                                    ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _key(self, request: httpx2.Request) -> None:
        """The idempotency header on the write itself, not on the session's set-up (an
        upstream that dedupes by key would answer a ``tools/call`` with the answer to an
        ``initialize`` sent under the same key)."""
        assert self.keyed is not None
        try:
            message = json.loads(request.content) if request.method == "POST" else None
        except ValueError:
            return
        if isinstance(message, dict) and message.get("method") == TOOLS_CALL:
            request.headers[self.keyed[0]] = self.keyed[1]

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _quoted(upstream: Upstream, text: str) -> str:
    """What the server said (in an SDK error: a result that did not validate quotes it),
    as a log may show it: redacted by name, without the credential's echoes."""
    text = redact_text(text)
    return text if upstream.echoes is None else upstream.echoes.text(text)


def _credential(upstream: Upstream) -> dict[str, str]:
    if upstream.credential is not None:
        return {name: value for name, value in upstream.credential.headers if value}
    return {}


def _observed(result: Any) -> Observed:
    """A read tool's state as journaled (redacted), with its true JSON as the body the
    journal seals when redaction changed it (rollback puts secrets back from that)."""
    state = mcp.true_tool_state(result)
    if not isinstance(state, (dict, list)):
        return Observed(200, state, None)
    return Observed(200, mcp.tool_state(result), None,
                    json.dumps(state, ensure_ascii=False).encode(), "application/json")
