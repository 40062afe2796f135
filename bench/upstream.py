"""The benchmark's upstream API: GET and PATCH /items/{id}, a ~200-byte JSON body.

    python bench/upstream.py [--port 0] [--record]      # prints "ready port=N"

``--record`` (the kill-switch run) also logs every arrival, in order, with its
CLOCK_MONOTONIC time (comparable across processes on Linux):
``POST /_mark/NAME`` adds a marker, ``GET /_log`` returns the log as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _serve import serve

_cache: dict[str, bytes] = {}
_log: list[tuple[float, str, str]] | None = None  # (monotonic, method, path) with --record


def _item(item_id: str) -> bytes:
    body = _cache.get(item_id)
    if body is None:
        body = json.dumps({
            "id": item_id, "name": f"Widget {item_id}", "sku": f"WID-{item_id:0>6}",
            "qty": 7, "price_cents": 1999, "tags": ["bench", "item"],
            "description": "A small fixed record served by the benchmark upstream.",
            "updated_at": "2024-01-01T00:00:00Z",
        }, separators=(",", ":")).encode()
        if len(_cache) < 10_000:
            _cache[item_id] = body
    return body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        message = await receive()
        more = message.get("more_body", False)
    if _log is not None:
        path = scope["path"]
        if path == "/_log":
            await _json(send, 200, json.dumps(_log).encode())
            return
        if path.startswith("/_mark/"):
            _log.append((time.monotonic(), "MARK", path[len("/_mark/"):]))
            await _json(send, 200, b"{}")
            return
        _log.append((time.monotonic(), scope["method"], path))
    parts = scope["path"].split("/")
    if len(parts) == 3 and parts[1] == "items" and parts[2] and scope["method"] in ("GET", "PATCH"):
        status, body = 200, _item(parts[2])
    else:
        status, body = 404, b'{"error":"not found"}'
    await _json(send, status, body)


async def _json(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", action="store_true")
    options = parser.parse_args()
    if options.record:
        _log = []
    serve(app, port=options.port)
