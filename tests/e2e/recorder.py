"""A real HTTP upstream that records what reaches it, served from a thread of the test.

Every request is logged, in arrival order, before it is answered; the test
adds its own markers to the same log (``mark``), so "did anything arrive
after engage returned?" is a question about order, not about clocks.
``PATCH /hang/...`` never answers: it waits until the client goes away (the
gateway cut it off) or the recorder stops. ``PATCH /gate/...`` is answered once
the test opens ``gate`` (``gated`` says one arrived).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass(frozen=True)
class Arrival:
    method: str
    path: str


class Recorder:
    def __init__(self) -> None:
        self.log: list[Arrival] = []
        self._lock = threading.Lock()
        self.hanging = threading.Event()  # a /hang write has arrived and waits
        self.cut_off = threading.Event()  # ... and its client went away
        self.gated = threading.Event()  # a /gate write has arrived and waits for ``gate``
        self.gate = threading.Event()
        self.url = ""

    def mark(self, name: str) -> None:
        with self._lock:
            self.log.append(Arrival("MARK", name))

    def between(self, first: str, last: str) -> list[Arrival]:
        """What arrived after marker ``first`` and before marker ``last``."""
        with self._lock:
            log = list(self.log)
        start = log.index(Arrival("MARK", first))
        end = log.index(Arrival("MARK", last))
        return log[start + 1:end]

    def count(self, method: str, prefix: str) -> int:
        with self._lock:
            return sum(1 for a in self.log if a.method == method and a.path.startswith(prefix))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self._lock:
            self.log.append(Arrival(scope["method"], scope["path"]))
        message = {"more_body": True}
        while message.get("more_body"):
            message = await receive()
        if scope["path"].startswith("/hang/") and scope["method"] == "PATCH":
            self.hanging.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.cut_off.set()
            return
        if scope["path"].startswith("/gate/") and scope["method"] == "PATCH":
            self.gated.set()
            await asyncio.to_thread(self.gate.wait)
        body = json.dumps({"id": scope["path"].rsplit("/", 1)[-1], "ok": True}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    @classmethod
    @contextmanager
    def serving(cls) -> Iterator[Recorder]:
        recorder = cls()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        server = uvicorn.Server(uvicorn.Config(recorder, lifespan="off", log_level="warning",
                                               access_log=False, timeout_graceful_shutdown=1))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                                  daemon=True)
        thread.start()
        recorder.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            yield recorder
        finally:
            recorder.gate.set()
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()
