"""HTTP/1.1 client connections on asyncio protocols, parsed by httptools.

One ``Connection`` carries one exchange at a time (no pipelining); ``Pool``
keeps the idle ones per origin for reuse. This is all the gateway asks of an
HTTP client, and nothing more: the request head is written as given (no
default headers, the target exactly as encoded), the response body is
neither decompressed nor decoded. Measured on the bench machine, a GET
through aiohttp's ``ClientSession`` cost 150-190 microseconds more than
through a bare protocol, about half of what the gateway added to a read.

A response is read whole or streamed; while streamed, reading from the
socket pauses when a megabyte waits unread (back-pressure to the upstream).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import httptools

from gateway.errors import ConnectionLost

Origin = tuple[str, str, int]  # scheme, host, port
_HIGH_WATER = 1 << 20
_KEEP_IDLE = 30.0  # seconds an idle connection is kept
_MAX_IDLE = 256  # idle connections kept per origin


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    length: int | None  # Content-Length, when the upstream sent one


@dataclass(slots=True)
class Exchange:
    """One request's response, as it arrives."""

    head_only: bool
    head: asyncio.Future[Response]
    chunks: collections.deque[bytes] = field(default_factory=collections.deque)
    buffered: int = 0
    waiter: asyncio.Future[None] | None = None
    complete: bool = False
    error: BaseException | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int | None = None
    framed: bool = False  # Content-Length or chunked: the end is not the connection's


class Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: Exchange | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None  # fires at or before the deadline
        self._timer_at = 0.0
        self._deadline: float | None = None  # the exchange's, loop time

    # asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self._exchange is None:  # unsolicited bytes: this connection is not usable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"malformed response: {exc}", False))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost finishes the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self._exchange
        if exchange is not None and not exchange.complete:
            if exchange.head.done() and not exchange.framed and not exchange.head_only:
                self.on_message_complete()  # the body ended with the connection
            else:
                self._fail(ConnectionLost("the upstream closed the connection",
                                          not exchange.head.done()))
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionLost("connection lost while sending", False))

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # httptools callbacks --------------------------------------------------------
    def on_message_begin(self) -> None:
        assert self._exchange is not None
        self._exchange.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._exchange is not None
        self._exchange.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # 100 Continue and friends: not the answer
            return
        length = None
        for name, value in exchange.headers:
            lowered = name.lower()
            if lowered == "content-length":
                length = int(value) if value.strip().isdigit() else None
                exchange.framed = True
            elif lowered == "transfer-encoding":
                exchange.framed = True
        exchange.length = length
        if not exchange.head.done():
            exchange.head.set_result(Response(status, exchange.headers, length))
        if exchange.head_only:  # a HEAD response announces a body it does not carry
            keep_alive = self._parser.should_keep_alive()
            self._parser = httptools.HttpResponseParser(self)  # the next response starts afresh
            self.on_message_complete(keep_alive)

    def on_body(self, chunk: bytes) -> None:
        exchange = self._exchange
        assert exchange is not None
        exchange.chunks.append(chunk)
        exchange.buffered += len(chunk)
        if exchange.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake(exchange)

    def on_message_complete(self, keep_alive: bool | None = None) -> None:
        exchange = self._exchange
        if exchange is None or exchange.complete:
            return
        if not exchange.head.done():  # the end of a 1xx response
            return
        exchange.complete = True
        if keep_alive is None:
            keep_alive = not self.closed and self._parser.should_keep_alive()
        self.reusable = bool(keep_alive)
        self._wake(exchange)

    # The exchange -----------------------------------------------------------------
    def begin(self, head_only: bool, deadline: float) -> Exchange:
        """A new exchange that fails with TimeoutError at ``deadline`` (loop time)."""
        self._exchange = Exchange(head_only, self._loop.create_future())
        self.reusable = False
        self.extend(deadline)
        return self._exchange

    def extend(self, deadline: float) -> None:
        """Move the exchange's deadline (a stream: the limit runs between reads).

        One timer per connection, as the listener's connections have: it is moved
        only when the deadline comes sooner than it fires; when it fires before the
        deadline (an exchange since moved it later), it is set again for the deadline.
        A pooled GET so costs no timer of its own (a ``call_at`` and a ``cancel`` each).
        """
        self._deadline = deadline
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(deadline, self._check), deadline

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # no exchange under way
        if self._loop.time() < deadline:
            self._timer, self._timer_at = self._loop.call_at(deadline, self._check), deadline
            return
        self._deadline = None
        self._fail(TimeoutError())
        self.close()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained

    async def body(self, exchange: Exchange) -> AsyncGenerator[bytes, None]:
        """The response body, chunk by chunk, as it arrives."""
        while True:
            if exchange.chunks:
                chunk = exchange.chunks.popleft()
                exchange.buffered -= len(chunk)
                if self._paused and exchange.buffered < _HIGH_WATER // 4 \
                        and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if exchange.error is not None:
                raise exchange.error
            if exchange.complete:
                return
            exchange.waiter = self._loop.create_future()
            await exchange.waiter

    async def read(self, exchange: Exchange) -> bytes:
        """The whole response body."""
        while not exchange.complete:
            if exchange.error is not None:
                raise exchange.error
            exchange.waiter = self._loop.create_future()
            await exchange.waiter
        if exchange.error is not None:
            raise exchange.error
        data = b"".join(exchange.chunks)
        exchange.chunks.clear()
        return data

    def _wake(self, exchange: Exchange) -> None:
        waiter, exchange.waiter = exchange.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        exchange = self._exchange
        if exchange is None or exchange.complete:
            return
        exchange.error = error
        if not exchange.head.done():
            exchange.head.set_exception(error)
            exchange.head.exception()  # retrieved: nobody else may be waiting for it
        self._wake(exchange)

    def done(self) -> None:
        """The exchange is over (or abandoned): its deadline no longer applies (the timer
        stays, for the next exchange, until it fires or the connection closes)."""
        self._deadline = None

    def close(self) -> None:
        self.done()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class Pool:
    """Idle connections per origin, the most recently used first."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            _, connection = await loop.create_connection(
                lambda: Connection(loop), host, port, ssl=self._tls, server_hostname=host)
        else:
            _, connection = await loop.create_connection(lambda: Connection(loop), host, port)
        return connection

    def take(self, origin: Origin, fresher: float | None = None) -> Connection | None:
        """The most recently used idle connection; ``fresher``: only one idle for less
        than that many seconds (older ones stay for callers that may retry)."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle[-1]
            if connection.closed or now - connection.idle_since >= _KEEP_IDLE:
                idle.pop().close()
                continue
            if fresher is not None and now - connection.idle_since >= fresher:
                return None
            return idle.pop()
        return None

    def give_back(self, origin: Origin, connection: Connection) -> None:
        connection.done()
        if not connection.reusable or connection.closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, [])
        idle.append(connection)
        if len(idle) > _MAX_IDLE:
            idle.pop(0).close()

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
