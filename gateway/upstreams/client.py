"""The production ``Upstream``: HTTP/1.1 over pooled ``http1`` connections.

Bodies pass through verbatim: no automatic decompression, no default
``User-Agent``, ``Accept-Encoding`` or ``Content-Type``, the request target
sent exactly as the agent encoded it. Framing is the client's own: a bytes
body goes with ``Content-Length``, a streamed one chunked. A buffered call
has one limit for all of it; a streamed download a limit between reads (it
may be long).

A write is never sent twice: once any byte of it may have left, a broken
connection is the caller's ``UpstreamLost`` (outcome unknown), whatever the
method, since an upstream that applied the write and then died looks, from
here, exactly like one that closed an idle connection as the request went
out. Only reads (GET, HEAD, OPTIONS, TRACE) are retried once on a fresh
connection in that case. To make that race rare for writes, a write reuses
only a connection idle for less than ``_WRITE_IDLE`` seconds (upstreams
close idle connections after a few seconds: uvicorn and Node after 5).
Failures before any byte was written (refused, connect timeout) are
``UpstreamUnreachable`` / ``ConnectTimeout``: nothing was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from functools import lru_cache

from gateway.errors import ConnectionLost, ConnectTimeout, UpstreamLost, UpstreamTimeout, UpstreamUnreachable
from gateway.ports import UpstreamResponse
from gateway.upstreams.http1 import Connection, Exchange, Origin, Pool, Response

_SMALL = 256 * 1024  # a streamed response this small is cheaper read whole
_READS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # retried after an idle close
_WRITE_IDLE = 2.0  # seconds: a write reuses only a connection idle for less
_EMPTY_MEANS_ZERO = frozenset({"POST", "PUT", "PATCH"})
Headers = Mapping[str, str] | list[tuple[str, str]]


@lru_cache(maxsize=256)
def _origin(prefix: str) -> tuple[Origin, str]:
    """``scheme://authority`` -> the origin and its Host header value."""
    scheme, _, authority = prefix.partition("://")
    host, port = authority, 443 if scheme == "https" else 80
    if authority.startswith("["):  # [v6]:port
        host, _, rest = authority[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif ":" in authority:
        host, _, number = authority.rpartition(":")
        port = int(number)
    if "@" in host:
        raise ValueError("user information in an upstream URL is not supported")
    return (scheme.lower(), host.lower(), port), authority


def split_url(url: str) -> tuple[Origin, str, str]:
    """The origin, the Host value and the request target, the target byte for byte.

    >>> split_url("http://127.0.0.1:3000/a%2Fb?q=1")
    (('http', '127.0.0.1', 3000), '127.0.0.1:3000', '/a%2Fb?q=1')
    """
    start = url.index("://") + 3
    end = len(url)
    for mark in "/?":
        found = url.find(mark, start)
        if found != -1:
            end = min(end, found)
    origin, authority = _origin(url[:end])
    target = url[end:]
    if not target.startswith("/"):
        target = "/" + target
    return origin, authority, target


def request_head(method: str, target: str, headers: Headers, authority: str,
                 framing: str | None) -> bytes:
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    host = False
    for name, value in items:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r} holds a line break")
        if name.lower() == "host":
            host = True
        lines.append(f"{name}: {value}\r\n")
    if not host:
        lines.append(f"host: {authority}\r\n")
    if framing is not None:
        lines.append(framing)
    lines.append("\r\n")
    text = "".join(lines)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


class UpstreamClient:
    def __init__(self, timeout: float = 30.0, connect_timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool = Pool()

    async def request(self, method: str, url: str, headers: Headers,
                      body: bytes | AsyncIterator[bytes] | None, *, stream: bool = False,
                      timeout: float | None = None, total: bool = False) -> UpstreamResponse:
        """``total``: a streamed response too ends within ``timeout``, reads included
        (unless its rule streams: server-sent events). An upstream's ``101`` is refused
        (502): the gateway relays no tunnel."""
        limit = timeout or self._timeout
        try:
            origin, authority, target = split_url(url)
            if body is None or isinstance(body, bytes):
                framing = f"content-length: {len(body)}\r\n" if body or (
                    body is not None and method in _EMPTY_MEANS_ZERO) else None
            else:
                framing = "transfer-encoding: chunked\r\n"
            head = request_head(method, target, headers, authority, framing)
        except ValueError as exc:
            raise UpstreamUnreachable(f"{_where(method, url)}: {exc}") from None
        connection: Connection | None = None
        response: Response | None = None
        data = None
        written = [False]  # set once a byte of the request may have left
        deadline = [0.0]  # loop time: set by _send when the limit starts
        try:  # streamed: the limit runs until the head, then between reads
            connection, exchange, response = await self._send(method, origin, head, body,
                                                              limit, deadline, written)
            if response.status == 101:  # a tunnel nothing would judge; the request was sent
                raise UpstreamLost(f"{_where(method, url)} answered 101 Switching Protocols; the "
                                   "gateway relays no upgraded connection")
            if not stream or method == "HEAD" or (response.length is not None
                                                  and response.length <= _SMALL):
                data = await connection.read(exchange)
        except BaseException as exc:
            if connection is not None:
                connection.close()
            where = _where(method, url)
            answered = None if response is None else (response.status, response.headers)
            if isinstance(exc, TimeoutError):
                if not written[0]:
                    raise ConnectTimeout(f"{where}: no connection in time; not sent") from None
                timed_out = UpstreamTimeout(f"{where} timed out; the outcome is unknown")
                timed_out.head = answered
                raise timed_out from None
            if isinstance(exc, (OSError, ConnectionLost)):
                if written[0]:
                    lost = UpstreamLost(f"{where} failed after it was sent "
                                        f"({type(exc).__name__}); the outcome is unknown")
                    lost.head = answered
                    raise lost from None
                raise UpstreamUnreachable(f"{where} failed: {type(exc).__name__}; "
                                          "not sent") from None
            raise
        if data is not None:
            self._pool.give_back(origin, connection)
            return UpstreamResponse(response.status, response.headers, body=data)
        return UpstreamResponse(response.status, response.headers,
                                stream=self._relay(origin, connection, exchange, limit,
                                                   _where(method, url),
                                                   deadline[0] if total else None))

    async def _send(self, method: str, origin: Origin, head: bytes,
                    body: bytes | AsyncIterator[bytes] | None, limit: float,
                    deadline: list[float], written: list[bool],
                    ) -> tuple[Connection, Exchange, Response]:
        """``deadline[0]``: set to now + ``limit`` (loop time) on the first try. A pooled
        connection's loop is the running one, so a reused connection asks no
        ``get_running_loop`` (in Python 3.11 each is a ``getpid`` system call)."""
        retry = method in _READS and (body is None or isinstance(body, bytes))
        while True:
            connection = self._pool.take(origin, None if method in _READS else _WRITE_IDLE)
            reused = connection is not None
            loop = asyncio.get_running_loop() if connection is None else connection.loop
            if not deadline[0]:
                deadline[0] = loop.time() + limit
            if connection is None:
                try:
                    async with asyncio.timeout(min(self._connect_timeout,
                                                   deadline[0] - loop.time())):
                        connection = await self._pool.connect(origin)
                except TimeoutError:
                    if loop.time() >= deadline[0]:
                        raise
                    raise ConnectionRefusedError("connect timed out") from None
            exchange = connection.begin(method == "HEAD", deadline[0])
            written[0] = True
            try:
                if body is None or isinstance(body, bytes):
                    connection.write(head + body if body else head)
                else:
                    await _send_chunked(connection, head, body)
                return connection, exchange, await exchange.head
            except ConnectionLost as exc:
                connection.close()
                if reused and retry and exc.before_response:
                    retry = False  # a read: the upstream had closed it while idle, or
                    written[0] = False  # died; either way a read may be asked again, fresh
                    continue
                raise
            except BaseException:
                connection.close()
                raise

    async def _relay(self, origin: Origin, connection: Connection, exchange: Exchange,
                     limit: float, where: str, end: float | None) -> AsyncIterator[bytes]:
        loop = connection.loop
        chunks = connection.body(exchange)
        try:
            while True:
                connection.extend(loop.time() + limit if end is None else end)
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeout(f"{where} timed out while streaming") from None
                except ConnectionLost as exc:
                    raise UpstreamUnreachable(f"{where} failed while streaming: "
                                              f"{type(exc).__name__}") from None
                yield chunk
        finally:
            await chunks.aclose()
            if exchange.complete and exchange.error is None:
                self._pool.give_back(origin, connection)
            else:
                connection.close()

    async def close(self) -> None:
        self._pool.close()


def _where(method: str, url: str) -> str:
    """A request as its errors name it (without the query: it may carry a credential)."""
    return f"{method} {url.partition('?')[0]}"


async def _send_chunked(connection: Connection, head: bytes, body: AsyncIterator[bytes]) -> None:
    connection.write(head)
    async for chunk in body:
        if chunk:
            connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await connection.drain()
    connection.write(b"0\r\n\r\n")
