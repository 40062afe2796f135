"""One client connection: uvicorn's httptools protocol, with the gateway's guards.

Two things the ASGI app cannot see are decided here, where the request line
and the clock are:

- an absolute-form target (``GET http://host/crm/... HTTP/1.1``) is marked on
  the scope (``gateway.absolute_form``), so the listener refuses it (400)
  instead of routing the path uvicorn kept from it;
- a client gets ``client_timeout`` seconds from connecting (or from the first
  byte of a request) to finish sending the headers, and as long again between
  two pieces of a body; then the connection is closed (with a 408 when no
  response is under way). Idle keep-alive connections are uvicorn's own
  ``timeout_keep_alive``. A body the gateway has stopped reading (flow control:
  the upstream is slow) is not the client's delay and does not count.

The scope also carries ``gateway.link``, the connection as the pipeline sees it
(``gateway.services.call.AgentLink``): whether it is closed (the agent gave up),
which the pipeline asks before it sends a write, and a callback when it closes,
which an agent waiting on a held call needs at once (its resend may follow).

And one thing for speed: uvicorn writes a response's head and its body with
two ``transport.write`` calls, two ``send`` syscalls (on loopback each also
delivers the segment, in this process's time). When the listener knows the
whole body follows at once it says so (``scope["gateway.hold_head"]``), and
the head goes out with the body in one write. The bytes are the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_CLIENT_TIMEOUT = 20.0
log = logging.getLogger("gateway.proxy")
_BODY = b'{"error": {"code": "request_timeout", "message": "the request came too slowly"}}'
_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY))


class _OneWrite:
    """The transport uvicorn's request cycles write through: the write after
    ``hold_head()`` (a response head) is held and sent with the next one (its body) in
    one ``writelines``; anything else passes straight through."""

    __slots__ = ("_transport", "_hold", "_held")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._hold = False
        self._held: bytes | None = None

    def hold_head(self) -> None:
        self._hold = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif self._hold:
            self._hold, self._held = False, data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send what is held (a HEAD's head has no body write after it)."""
        self._hold = False
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Link:
    """The agent's connection, for the pipeline (``AgentLink``): one per connection."""

    __slots__ = ("_transport", "_callbacks")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._callbacks: list[Callable[[], None]] = []

    def closed(self) -> bool:
        return self._transport.is_closing()

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self._transport.is_closing():
            callback()
            return _nothing
        self._callbacks.append(callback)
        return partial(self._forget, callback)

    def _forget(self, callback: Callable[[], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def lost(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback on the agent's connection closing failed")


def _nothing() -> None:
    pass


class GuardedProtocol(HttpToolsProtocol):
    """Callbacks only note when the client last owed the gateway bytes (a clock read);
    one timer per connection checks it, so a request costs no timer of its own."""

    client_timeout: float = DEFAULT_CLIENT_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._one_write = _OneWrite(transport)
        self._link = _Link(transport)
        self._owed_since: float | None = self.loop.time()  # waiting for the client since
        self._check = self.loop.call_later(self.client_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._check.cancel()
        self._link.lost()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._owed_since = self.loop.time()

    def on_headers_complete(self) -> None:
        if not self.url.startswith(b"/"):
            self.scope["gateway.absolute_form"] = True  # type: ignore[typeddict-unknown-key]
        self.scope["gateway.hold_head"] = self._one_write.hold_head  # type: ignore[typeddict-unknown-key]
        self.scope["gateway.link"] = self._link  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = self._one_write  # type: ignore[assignment]
        self._owed_since = self.loop.time()  # the body, if any

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._owed_since = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._owed_since = None

    def on_response_complete(self) -> None:
        self._one_write.flush()
        super().on_response_complete()

    def _too_slow(self) -> None:
        if self.transport.is_closing():
            return
        now, since = self.loop.time(), self._owed_since
        if since is None or now - since < self.client_timeout or (
                self.flow is not None and self.flow.read_paused):  # not the client's delay
            due = self.client_timeout if since is None or now - since >= self.client_timeout \
                else since + self.client_timeout - now
            self._check = self.loop.call_later(due, self._too_slow)
            return
        self._one_write.flush()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT)
        self.transport.close()


def protocol_with(client_timeout: float) -> type[Any]:
    """The protocol class uvicorn instantiates per connection, with this timeout."""
    return type("AgentConnection", (GuardedProtocol,), {"client_timeout": client_timeout})
