"""A recording REST upstream for SDKs whose API has no installable server.

It keeps JSON resources by path (``/{api}/...``) and records every request it
is sent (method, path, query, headers, body), so a test can prove what the
upstream saw: the SDK's call, the gateway's capture and rollback, and never the
agent's key. Semantics, the common REST ones: GET reads, PUT replaces, PATCH
and a POST to an existing resource merge (dicts deeply), a POST elsewhere
creates a child ``{id}``, DELETE removes. ``ACTIONS`` maps RPC-style paths
(Slack's ``/api/users.profile.set``) to the resource they read or change.
Resources may carry ``{base}`` in strings: served as this server's URL (GitHub
returns absolute ``url`` fields).

Runs under uvicorn in a thread (the SDKs under test are synchronous).
"""

from __future__ import annotations

import copy
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


# RPC paths: (reads or writes, resource path, key in the answer that holds the resource)
ACTIONS: dict[str, tuple[str, str, str]] = {
    "/slack/api/users.profile.get": ("read", "/slack/profile", "profile"),
    "/slack/api/users.profile.set": ("write", "/slack/profile", "profile"),
    "/slack/api/auth.test": ("read", "/slack/auth", "user"),
}


def _merge(into: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@dataclass
class Recorder:
    resources: dict[str, Any] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1000))

    def seed(self, resources: dict[str, Any]) -> None:
        for path, value in resources.items():
            self.resources[path] = copy.deepcopy(value)

    def state(self, path: str) -> Any:
        return self.resources.get(path)

    def requests(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]

    def _out(self, value: Any) -> Any:
        return json.loads(json.dumps(value).replace("{base}", self.url))

    def handle(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
        data: Any = None
        if body:
            if content_type.startswith("application/x-www-form-urlencoded"):
                data = dict(parse_qsl(body.decode(), keep_blank_values=True))
            else:
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
        if path in ACTIONS:
            kind, target, key = ACTIONS[path]
            if kind == "write" and isinstance(data, dict) and isinstance(data.get(key), dict):
                _merge(self.resources.setdefault(target, {}), data[key])
            return 200, {"ok": True, key: self._out(self.resources.get(target))}
        if method in ("GET", "HEAD"):
            if path in self.resources:
                return 200, self._out(self.resources[path])
            return 404, {"message": "Not Found"}
        if method == "PUT":
            self.resources[path] = data
            return 200, self._out(data)
        if method in ("PATCH", "POST") and path in self.resources:
            if isinstance(data, dict):
                _merge(self.resources[path], data)
            return 200, self._out(self.resources[path])
        if method == "POST":
            new_id = str(next(self._ids))
            item = {**(data if isinstance(data, dict) else {}), "id": new_id}
            self.resources[f"{path.rstrip('/')}/{new_id}"] = item
            return 201, self._out(item)
        if method == "DELETE":
            if self.resources.pop(path, None) is None:
                return 404, {"message": "Not Found"}
            return 204, None
        return 405, {"message": "method not allowed"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        self.seen.append(Seen(scope["method"], scope["path"],
                              scope.get("query_string", b"").decode("latin-1"), headers, body))
        content_type = dict(headers).get("content-type", "")
        status, answer = self.handle(scope["method"], scope["path"], body, content_type)
        data = b"" if answer is None else json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def serve(recorder: Recorder) -> tuple[uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    recorder.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(recorder, log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("the recording upstream did not start")
        thread.join(0.02)
    return server, thread
