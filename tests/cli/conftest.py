"""A fake admin API on a real socket: uvicorn on 127.0.0.1:0 in a background thread.

It answers each ``(method, path)`` with the JSON set by the test (or what a
function of the request returns, for paging) and records every request
(method, path, query, headers, JSON body) for assertions.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn

TOKEN = "tok-operator"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeAdmin:
    url: str = ""
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def on(self, method: str, path: str, body: Any | Callable[[Recorded], Any],
           status: int = 200) -> None:
        """Answer with ``body``; a callable gets each request and returns the body, or
        ``(status, body)``."""
        self.routes[(method, path)] = (status, body)

    @property
    def last(self) -> Recorded:
        assert self.requests, "the fake admin API received no request"
        return self.requests[-1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        request = Recorded(method, path, dict(parse_qsl(scope["query_string"].decode())),
                           {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                           json.loads(raw) if raw else None)
        self.requests.append(request)
        status, body = self.routes.get((method, path), (404, {"error": {
            "code": "not_found", "message": f"no route {method} {path}"}}))
        if callable(body):
            body = body(request)
            if isinstance(body, tuple):
                status, body = body
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        content_type = b"text/plain" if isinstance(body, str) else b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeAdmin]:
    fake = FakeAdmin()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(fake, lifespan="off", log_level="warning",
                                           access_log=False, ws="none", http="h11"))
    started = threading.Event()
    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets=sockets)
        started.set()

    server.startup = startup  # type: ignore[method-assign]
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced by the fixture, not lost in the thread
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=serve, name="fake-admin-api", daemon=True)
    thread.start()
    assert started.wait(30), "the fake admin API did not start"
    assert not failure and server.started, f"the fake admin API failed to start: {failure}"
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def admin(fake_server: FakeAdmin, monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    """The fake admin API, emptied, with GATEWAY_TOKEN and GATEWAY_ADMIN_URL pointing at it."""
    fake_server.routes.clear()
    fake_server.requests.clear()
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    monkeypatch.setenv("GATEWAY_ADMIN_URL", fake_server.url)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return fake_server


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``gateway ARGV`` in process: (exit code, stdout, stderr)."""
    from gateway.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``gateway ARGV`` must stop at argument checking (exit 2, usage): its stderr."""
    from gateway.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage:" in err
    return err
