"""Protocol edges over raw sockets against a real gateway: absolute-form targets,
the connection closed after a gateway-made 400 (nothing pipelined behind it
runs), routing headers from agents dropped, ``Expect: 100-continue`` over the
limit answered 413 without a 100, slow and idle clients timed out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import AGENT_KEY
from tests.trust.recording import Trusted, parse_replies, read_all, trusted_gateway

RULES = """
- id: no-admin
  match: {path: "/admin/**"}
  action: deny
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
"""
KEY = f"X-Gateway-Key: {AGENT_KEY}\r\n"
TIMEOUT = 0.5  # the gateway's client_timeout in these tests


@pytest.mark.parametrize("target", ["http://127.0.0.1/crm/admin/x",
                                    "http://127.0.0.1/crm/customers/1",
                                    "https://evil.example/crm/customers/1",
                                    "*"])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_absolute_form_target_is_refused(gw: Trusted, target: str) -> None:
    reply = await gw.send(f"GET {target} HTTP/1.1")
    assert reply.status == 400
    assert gw.upstream.reached() == []


FIRST = [
    # (row id, the first request's head): each answered 400 by the gateway
    ("encoded-control", "GET /crm/admin%0a/x HTTP/1.1"),
    ("absolute-form", "GET http://127.0.0.1/crm/customers/1 HTTP/1.1"),
    ("method-override", "GET /crm/customers/1 HTTP/1.1\r\nX-HTTP-Method-Override: DELETE"),
    ("query-method", "GET /crm/customers/1?_method=DELETE HTTP/1.1"),
    ("case-variant", "GET /crm/ADMIN/x HTTP/1.1"),
    ("dot-segment", "GET /crm/x/../admin/y HTTP/1.1"),
]


@pytest.mark.parametrize("first", [head for _, head in FIRST], ids=[row for row, _ in FIRST])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_nothing_pipelined_behind_a_400_runs(gw: Trusted, first: str) -> None:
    reader, writer = await gw.connect()
    second = (f"POST /crm/customers HTTP/1.1\r\nHost: g\r\n{KEY}"
              "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    writer.write(f"{first}\r\nHost: g\r\n{KEY}\r\n{second}".encode("latin-1"))
    await writer.drain()
    data = await read_all(reader, deadline=8)
    writer.close()
    replies = parse_replies(data)
    assert [r.status for r in replies] == [400], data
    assert replies[0].headers.get("connection") == "close"
    assert gw.upstream.reached() == []


@pytest.mark.parametrize("header", ["X-Original-URL: /admin/x", "X-Rewrite-URL: /admin/x",
                                    "X-Forwarded-Host: evil.example"])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_routing_headers_from_agents_are_not_forwarded(gw: Trusted, header: str) -> None:
    reply = await gw.send(f"GET /crm/customers/1 HTTP/1.1\n{header}")
    assert reply.status == 200
    (arrival,) = gw.upstream.reached()
    assert header.split(":")[0].lower() not in arrival.headers


async def test_expect_continue_over_the_limit_is_413_without_a_100(tmp_path: Path) -> None:
    async with trusted_gateway(tmp_path, RULES, max_write_body=1000) as gw:
        reader, writer = await gw.connect()
        writer.write((f"POST /crm/customers HTTP/1.1\r\nHost: g\r\n{KEY}"
                      "Content-Type: application/json\r\nContent-Length: 5000\r\n"
                      "Expect: 100-continue\r\n\r\n").encode())
        await writer.drain()
        data = await read_all(reader, deadline=8)
        writer.close()
        assert b"100 Continue" not in data
        assert [r.status for r in parse_replies(data)] == [413], data
        assert gw.upstream.reached() == []


async def test_expect_continue_under_the_limit_gets_100_then_the_answer(tmp_path: Path) -> None:
    async with trusted_gateway(tmp_path, RULES, max_write_body=1000) as gw:
        reader, writer = await gw.connect()
        writer.write((f"POST /crm/customers HTTP/1.1\r\nHost: g\r\n{KEY}"
                      "Content-Type: application/json\r\nContent-Length: 2\r\n"
                      "Connection: close\r\nExpect: 100-continue\r\n\r\n").encode())
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(b"{}")
        data = await read_all(reader, deadline=8)
        writer.close()
        assert [r.status for r in parse_replies(data)] == [200], data
        assert [a.method for a in gw.upstream.reached()] == ["POST"]


SLOW = [
    ("idle-after-connect", b""),
    ("slow-headers", f"GET /crm/customers/1 HTTP/1.1\r\nHost: g\r\n{KEY}".encode()),
    ("slow-body", (f"POST /crm/customers HTTP/1.1\r\nHost: g\r\n{KEY}"
                   "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\"").encode()),
]


@pytest.mark.parametrize("sent", [s for _, s in SLOW], ids=[row for row, _ in SLOW])
async def test_slow_or_idle_clients_are_timed_out(tmp_path: Path, sent: bytes) -> None:
    async with trusted_gateway(tmp_path, RULES, client_timeout=TIMEOUT) as gw:
        reader, writer = await gw.connect()
        writer.write(sent)
        await writer.drain()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await read_all(reader, deadline=10)
        closed_after = loop.time() - began
        writer.close()
        assert reader.at_eof(), "the gateway kept the connection open"
        assert closed_after < 8
        assert gw.upstream.reached() == []


HEADS = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
"""


async def test_pipelined_answers_come_whole_and_in_order(tmp_path: Path) -> None:
    """A head and its whole body leave in one write (gateway.proxy.connection): two
    pipelined GETs and a HEAD on one connection come back in order, each body after its
    own head, and nothing after the HEAD's head (it has no body write to go with)."""
    async with trusted_gateway(tmp_path, HEADS) as gw:
        reader, writer = await gw.connect()
        writer.write("".join(
            f"{method} /crm/customers/{n} HTTP/1.1\r\nHost: g\r\n{KEY}{last}\r\n"
            for method, n, last in (("GET", 1, ""), ("GET", 2, ""),
                                    ("HEAD", 3, "Connection: close\r\n"))).encode())
        await writer.drain()
        data = await read_all(reader, deadline=8)
        writer.close()
        first, second = parse_replies(data)[:2]
        assert (first.status, second.status) == (200, 200), data
        assert b'"1"' in first.body and b'"2"' in second.body, data
        head_of_head = data.rpartition(b"HTTP/1.1 ")[2]
        assert head_of_head.startswith(b"200 ") and head_of_head.endswith(b"\r\n\r\n"), data
        assert [(a.method, a.target) for a in gw.upstream.reached()] == [
            ("GET", "/customers/1"), ("GET", "/customers/2"), ("HEAD", "/customers/3")]
