"""A fault-injecting upstream: a real HTTP/1.1 server on 127.0.0.1:0 whose behaviour per
method and path is scripted, for tests of what the gateway does when the wire breaks.

It runs its own asyncio loop in a thread, so a test can drive a real ``gateway serve``
process with a plain (sync) httpx client while the upstream misbehaves::

    with FaultyUpstream() as upstream:              # started; stopped on exit
        upstream.put("/customers/c1", {"id": "c1", "plan": "pro"})   # seed a resource
        upstream.script("PATCH", "/customers/c1", DROP)              # the next PATCH only
        ... point a policy's base_url at upstream.url, send the call through the gateway ...
        assert upstream.methods() == ["GET", "PATCH"]                # what arrived, in order
        assert upstream.get("/customers/c1")["plan"] == "free"        # it was applied

Resources are JSON objects kept by path. Without a script, it is a small REST API:
``GET`` 200 with the object or 404; ``PUT`` replaces (200); ``PATCH`` merges (200);
``DELETE`` removes (204, or 404); ``POST /things`` creates ``/things/<id>`` (the
body's ``id``, else a new one; 201 with ``Location`` and the object). Every answer keeps the connection alive.

Faults (``script(method, path, fault, times=1, apply=...)``; ``times=None``: always):

``DROP``       apply the write, then close the connection before any byte of the head
``HALF_BODY``  apply, send the head (with Content-Length) and half the body, close
``STALL``      apply, send the head and half the body, then never send the rest
``HANG``       never answer (the connection stays open until the client gives up or
               ``stop()``); ``apply`` defaults to True
``IDLE_CLOSE`` the request is neither read nor applied: the connection is closed, as when
               the upstream closed an idle keep-alive connection while the request was
               on its way (``apply`` is always False)
``FAIL``       answer ``status`` (default 503) with a JSON error, nothing applied

``refuse()`` closes the listening socket: every new connection is refused (connections
already open stay); ``listen()`` opens it again on the same port.

``requests`` lists every request that arrived (``Received``: method, path, headers,
body, the connection's number and whether it was applied), faulted ones included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

DROP, HALF_BODY, HANG, IDLE_CLOSE, FAIL = "drop", "half_body", "hang", "idle_close", "fail"
STALL = "stall"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased; a repeated name keeps the last value
    body: bytes
    connection: int  # the connection's number, from 1, in the order they were accepted
    applied: bool = False
    fault: str | None = None


@dataclass
class _Script:
    fault: str
    times: int | None
    apply: bool
    status: int = 503


@dataclass
class FaultyUpstream:
    resources: dict[str, Any] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._scripts: dict[tuple[str, str], _Script] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1)
        self.port = 0

    # Control (any thread) --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyUpstream:
        self._thread.start()
        self.listen()
        return self

    def listen(self) -> None:
        self._call(self._listen())

    def refuse(self) -> None:
        """Stop accepting connections: a new one is refused (ECONNREFUSED)."""
        self._call(self._unlisten())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> FaultyUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, method: str, path: str, fault: str, times: int | None = 1,
               apply: bool | None = None, status: int = 503) -> None:
        """The next ``times`` ``method path`` requests meet ``fault`` (None: all of them)."""
        applies = fault in (DROP, HALF_BODY, HANG, STALL) if apply is None else apply
        with self._lock:
            self._scripts[(method.upper(), path)] = _Script(fault, times, applies and
                                                            fault != IDLE_CLOSE, status)

    def clear(self, method: str, path: str) -> None:
        with self._lock:
            self._scripts.pop((method.upper(), path), None)

    def put(self, path: str, value: Any) -> None:
        with self._lock:
            self.resources[path] = value

    def get(self, path: str) -> Any:
        with self._lock:
            return self.resources.get(path)

    def methods(self, path: str | None = None) -> list[str]:
        return [r.method for r in list(self.requests) if path is None or r.path == path]

    # The server ---------------------------------------------------------------------------
    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _shutdown(self) -> None:
        await self._unlisten()
        for writer in list(self._writers):
            writer.close()

    def _next_script(self, method: str, path: str) -> _Script | None:
        with self._lock:
            script = self._scripts.get((method, path))
            if script is None:
                return None
            if script.times is not None:
                script.times -= 1
                if script.times <= 0:
                    del self._scripts[(method, path)]
            return script

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                path = target.partition("?")[0]
                script = self._next_script(method, path)
                if script is not None and script.fault == IDLE_CLOSE:
                    self.requests.append(Received(method, path, headers, b"", number,
                                                  False, IDLE_CLOSE))
                    return
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                received = Received(method, path, headers, body, number,
                                    fault=script.fault if script else None)
                self.requests.append(received)
                if script is not None and script.fault == FAIL:
                    await _answer(writer, script.status, {"error": "scripted failure"})
                    continue
                status, value, extra = (self._apply(method, path, body)
                                        if script is None or script.apply
                                        else (0, None, []))
                received.applied = script is None or script.apply
                if script is None:
                    await _answer(writer, status, value, extra)
                    continue
                if script.fault == DROP:
                    return
                if script.fault in (HALF_BODY, STALL):
                    data = json.dumps(value if value is not None else {"ok": True}).encode()
                    writer.write(_head(status or 200, len(data), extra) + data[:len(data) // 2])
                    await writer.drain()
                    if script.fault == STALL:
                        await reader.read()  # until the client closes, or stop()
                    return
                if script.fault == HANG:
                    await reader.read()  # until the client closes, or stop()
                    return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _apply(self, method: str, path: str, body: bytes) -> tuple[int, Any, list[str]]:
        sent = json.loads(body) if body else None
        with self._lock:
            current = self.resources.get(path)
            if method in ("GET", "HEAD"):
                return (200, current, []) if current is not None else (404, {"error": "nf"}, [])
            if method == "PUT":
                self.resources[path] = sent
                return 200, sent, []
            if method == "PATCH":
                if current is None:
                    return 404, {"error": "not found"}, []
                merged = {**current, **(sent or {})}
                self.resources[path] = merged
                return 200, merged, []
            if method == "DELETE":
                if self.resources.pop(path, None) is None:
                    return 404, {"error": "not found"}, []
                return 204, None, []
            if method == "POST":
                given = sent.get("id") if isinstance(sent, dict) else None
                new_id = given if isinstance(given, str) else f"n{next(self._ids)}"
                created = {"id": new_id, **(sent or {})}
                location = f"{path.rstrip('/')}/{new_id}"
                self.resources[location] = created
                return 201, created, [f"location: {location}"]
        return 405, {"error": "method not allowed"}, []


def _head(status: int, length: int, extra: list[str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "content-type: application/json",
             f"content-length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(writer: asyncio.StreamWriter, status: int, value: Any,
                  extra: list[str] | None = None) -> None:
    data = b"" if value is None or status == 204 else json.dumps(value).encode()
    writer.write(_head(status, len(data), extra or []) + data)
    await writer.drain()
