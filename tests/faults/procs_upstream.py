"""A small fault-injecting upstream for the process tests: JSON resources over real HTTP.

It runs in the test's process on 127.0.0.1:0 (a thread per connection), keeps
resources by path, logs every request it receives, and injects faults on
request: ``hang`` (hold matching requests unanswered, unapplied, until
``release`` or close), ``fail`` (answer a status without applying). Tests
synchronise on what it has received (``wait_for``), never on sleeps.

    GET path      -> 200 the resource, 404 if none
    PUT path      -> replaces it (201 if new), 200 the resource
    PATCH path    -> merges the body into it, 200 the resource, 404 if none
    DELETE path   -> 204, 404 if none
    POST path     -> creates path/<n> from the body, 201 with it (``id`` set)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A killed gateway resets its connections: expected here, not worth a traceback."""


@dataclass
class Fault:
    method: str
    path: str | None  # None: any path
    kind: str  # hang | fail | gate
    count: int  # how many matching requests it takes; -1: all
    status: int = 503
    apply: bool = False  # hang: apply the write before hanging (it landed, no answer)
    empty: bool = False  # gate: once released, answer 204 with no body (no resource echoed)
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        return self.count != 0 and self.method == method and self.path in (None, path)


class FaultUpstream:
    def __init__(self, resources: dict[str, Any] | None = None) -> None:
        self.resources: dict[str, Any] = dict(resources or {})
        self.log: list[tuple[str, str, Any]] = []  # (method, path, body) as received
        self.stamps: list[float] = []  # time.time() each one was received at
        self.delay = 0.0  # seconds every write waits before it is applied (a slow upstream)
        self.faults: list[Fault] = []
        self._lock = threading.Condition()
        self._created = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?", 1)[0]
                status, answer = upstream.handle(self.command, path, body)
                if status is None:  # hung, then released or closed: no answer at all
                    self.close_connection = True
                    return
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if data:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _any

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # faults -------------------------------------------------------------------

    def hang(self, method: str, path: str | None = None, count: int = 1,
             apply: bool = False) -> Fault:
        fault = Fault(method, path, "hang", count, apply=apply)
        with self._lock:
            self.faults.append(fault)
        return fault

    def gate(self, method: str, path: str | None = None, count: int = -1,
             empty: bool = False) -> Fault:
        """Hold matching requests until ``release``, then answer them as usual (``empty``:
        applied, and answered 204 with no body, as an API that does not echo the resource)."""
        fault = Fault(method, path, "gate", count, empty=empty)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(self, method: str, path: str | None = None, count: int = 1,
             status: int = 503) -> Fault:
        fault = Fault(method, path, "fail", count, status)
        with self._lock:
            self.faults.append(fault)
        return fault

    def release(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.released.set()
            self.faults.clear()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # observing ------------------------------------------------------------------

    def received(self, method: str | None = None, path: str | None = None) -> list[Any]:
        with self._lock:
            return [body for m, p, body in self.log
                    if method in (None, m) and path in (None, p)]

    def wait_for(self, method: str, path: str | None = None, count: int = 1,
                 timeout: float = 30.0) -> list[Any]:
        """Until ``count`` matching requests were received (answered or not)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [b for m, p, b in self.log if m == method and path in (None, p)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the upstream received {len(found)} {method} "
                                         f"{path or ''}, not {count}; log: {self.log}")
                self._lock.wait(left)

    # the resources ----------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any) -> tuple[int | None, Any]:
        with self._lock:
            self.log.append((method, path, body))
            self.stamps.append(time.time())
            self._lock.notify_all()
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None and fault.count > 0:
                fault.count -= 1
        if fault is not None and fault.kind == "fail":
            return fault.status, {"error": "injected"}
        if fault is not None and fault.kind == "gate":
            fault.released.wait(120)
            applied = self._apply(method, path, body)
            return (204, None) if fault.empty and applied[0] < 300 else applied
        if fault is not None:  # hang
            if fault.apply:
                self._apply(method, path, body)
            fault.released.wait(120)
            return None, None
        if self.delay and method != "GET":  # the injected fault itself: a slow upstream
            # (bench/soak.py's; no test sets it). It runs in this request's own server
            # thread and answers late: nothing synchronises on it.
            time.sleep(self.delay)
        return self._apply(method, path, body)

    def _apply(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            current = self.resources.get(path)
            if method == "GET":
                return (404, {"error": "not found"}) if current is None else (200, current)
            if method == "PUT":
                self.resources[path] = body
                return (201 if current is None else 200), body
            if method == "PATCH":
                if current is None:
                    return 404, {"error": "not found"}
                self.resources[path] = {**current, **(body or {})}
                return 200, self.resources[path]
            if method == "DELETE":
                if current is None:
                    return 404, {"error": "not found"}
                del self.resources[path]
                return 204, None
            self._created += 1
            created = {**(body or {}), "id": str(self._created)}
            self.resources[f"{path.rstrip('/')}/{created['id']}"] = created
            return 201, created
