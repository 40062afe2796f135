"""A stand-in OTLP/HTTP collector for the benchmark: accepts every export, keeps nothing.

    python bench/otlp_sink.py [--port 0]      # prints "ready port=N"

It counts the spans' export requests and bytes (GET /stats) so the run can show that
spans were really exported while the gateway was measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _serve import serve

STATS = {"exports": 0, "bytes": 0}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more, size = True, 0
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["method"] == "POST" and scope["path"] == "/v1/traces":
        STATS["exports"] += 1
        STATS["bytes"] += size
        body, kind = b"", b"application/x-protobuf"
    else:
        body, kind = json.dumps(STATS).encode(), b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    serve(app, port=parser.parse_args().port)
