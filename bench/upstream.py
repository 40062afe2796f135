"""The benchmark's upstream API: GET and PATCH /items/{id}, a ~200-byte JSON body.

    python bench/upstream.py [--port 0]      # prints "ready port=N"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _serve import serve

_cache: dict[str, bytes] = {}


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
    parts = scope["path"].split("/")
    if len(parts) == 3 and parts[1] == "items" and parts[2] and scope["method"] in ("GET", "PATCH"):
        status, body = 200, _item(parts[2])
    else:
        status, body = 404, b'{"error":"not found"}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    serve(app, port=parser.parse_args().port)
