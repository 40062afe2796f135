"""``POST /v1/killswitch/engage`` answered without FastAPI's per-request machinery.

The engage is the admin call whose latency bounds a guarantee (when it returns, no
covered write leaves any process), and it comes when the machine is busiest. FastAPI's
routing, dependency solving, body parsing and response validation cost the admin
process ~170 us of CPU per call, before and after the engage, and under load every
such slice waits for a core again. This middleware takes the call itself when it is
plainly valid: a JSON object with ``FreezeRequest``'s fields and types, an operator
token of the approver role or above, a scope that is configured. Anything else (a bad
or missing token, a body pydantic would have to judge, an unknown target) goes on to
the FastAPI route with its body as read, so every refusal keeps the one error shape
(``api.create_admin_app``). What the engage raises goes to the app's exception
handlers, as the route's would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admin.auth import ROLES, Operator, OperatorDirectory
from gateway.errors import AdminError

PATH = "/v1/killswitch/engage"
FIELDS = frozenset({"reason", "upstream", "agent"})  # api.FreezeRequest's
MAX_REASON = 2000  # api.FreezeRequest.reason's max_length
MAX_BODY = 64 * 1024  # larger bodies are left to the route (and its limits)
_JSON_HEADERS = [(b"content-type", b"application/json")]

# (upstream, agent) -> (scope, target) or AdminError/ValueError, as the route checks them
Check = Callable[[str | None, str | None], Any]
# (scope, target, reason, operator) -> the route's answer
Engage = Callable[[Any, str | None, str, Operator], Awaitable[dict[str, Any]]]


class FastEngage:
    """ASGI middleware in front of the admin app's routes (``app.add_middleware``)."""

    def __init__(self, app: ASGIApp, check: Check, engage: Engage,
                 operators: Callable[[], OperatorDirectory],
                 handlers: Callable[[], Mapping[Any, Any]]) -> None:
        self.app = app
        self._check, self._engage = check, engage
        self._operators, self._handlers = operators, handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        messages: list[Message] = []
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or len(body) > MAX_BODY:
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
        taken = None if more else self._taken(scope, body)
        if taken is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        try:
            answer = await self._engage(*taken)
        except Exception as exc:
            handler = next((self._handlers()[kind] for kind in type(exc).__mro__
                            if kind is not Exception and kind in self._handlers()), None)
            if handler is None:
                raise  # the app's server-error layer answers 500, as for the route
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)
            return
        content = orjson.dumps(answer)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(content)).encode()),
                                *_JSON_HEADERS]})
        await send({"type": "http.response.body", "body": content})

    def _taken(self, scope: Scope, body: bytes) -> tuple[Any, str | None, str, Operator] | None:
        """The engage's arguments when this request is plainly valid; None: the route
        decides (and answers any error)."""
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header
        if headers.get(b"content-type") != b"application/json":
            return None
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(fields, dict) or not fields.keys() <= FIELDS:
            return None
        reason, upstream, agent = (fields.get(k) for k in ("reason", "upstream", "agent"))
        if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON:
            return None
        if not all(v is None or isinstance(v, str) for v in (upstream, agent)):
            return None
        authorization = headers.get(b"authorization")
        try:
            operator = self._operators().identify(
                authorization.decode("latin-1") if authorization is not None else None)
            if ROLES[operator.role] < ROLES["approver"]:
                return None
            kind, target = self._check(upstream, agent)
        except (AdminError, ValueError):
            return None
        return kind, target, reason, operator


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` as if nothing had been read: the messages read first, then on."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()
    return replayed
