"""A bare pass-through proxy: the floor a Python proxy costs, no policy, no journal.

Forwards every request to --upstream with one pooled aiohttp ClientSession.
With ``--capture`` it first GETs the same path before every write (what the
gateway's prior-state capture does), still with no journal: the reference
that leaves the journal's own cost showing.

    python bench/bare_proxy.py --upstream http://127.0.0.1:PORT [--port 0] [--capture]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _serve import serve

HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
       b"te", b"trailer", b"upgrade", b"proxy-authorization", b"proxy-connection"}


class BareProxy:
    def __init__(self, upstream: str, capture: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.capture = capture
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.session is None:  # created lazily, inside the server's event loop
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in scope["headers"] if k not in HOP]
        if self.capture and scope["method"] not in ("GET", "HEAD"):
            async with self.session.get(url, headers=headers, allow_redirects=False) as prior:
                await prior.read()
        async with self.session.request(scope["method"], url, headers=headers,
                                        data=body or None, allow_redirects=False) as resp:
            payload = await resp.read()
            out = [(k, v) for k, v in resp.raw_headers if k.lower() not in HOP]
            out.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capture", action="store_true",
                        help="GET the same path before each write (no journal)")
    args = parser.parse_args()
    serve(BareProxy(args.upstream, args.capture), port=args.port)
