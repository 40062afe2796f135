"""Method rules: HEAD is judged by GET's rules, TRACE/TRACK/CONNECT are refused,
``_method`` is a method override (400), and a method the gateway does not know
as safe (PROPFIND) is judged as a write: journaled, frozen by the kill switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trust.recording import Trusted, trusted_gateway

RULES = """
- id: no-admin-reads
  match: {methods: [GET], path: "/admin/**"}
  action: deny
- id: anything
  match: {path: "/**"}
  action: allow
"""

REFUSED = [
    # (row id, request head, body, statuses accepted)
    ("head-of-denied-get", "HEAD /crm/admin/x HTTP/1.1", b"", {403}),
    ("get-denied", "GET /crm/admin/x HTTP/1.1", b"", {403}),
    ("trace", "TRACE /crm/customers/1 HTTP/1.1", b"", {405}),
    ("track", "TRACK /crm/customers/1 HTTP/1.1", b"", {400, 405}),
    ("connect", "CONNECT 127.0.0.1:443 HTTP/1.1", b"", {400, 405}),
    ("query-method", "GET /crm/customers/1?_method=DELETE HTTP/1.1", b"", {400}),
    ("query-method-upper", "POST /crm/customers?_METHOD=delete HTTP/1.1", b"{}", {400}),
    ("query-method-encoded", "POST /crm/customers?%5Fmethod=DELETE HTTP/1.1", b"{}", {400}),
    ("form-method", "POST /crm/customers HTTP/1.1\n"
                    "Content-Type: application/x-www-form-urlencoded", b"_method=DELETE&a=1",
     {400}),
    ("override-header", "POST /crm/customers HTTP/1.1\nX-HTTP-Method-Override: DELETE",
     b"{}", {400}),
    ("override-header-method", "POST /crm/customers HTTP/1.1\nX-Method-Override: PUT",
     b"{}", {400}),
]

SHARED_GATEWAY = {"default": "allow"}  # the refused rows' gateway: only a rule refuses them


@pytest.mark.parametrize(("head", "body", "statuses"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_refused_method_never_reaches_the_upstream(gw: Trusted, head: str, body: bytes,
                                                         statuses: set[int]) -> None:
    reply = await gw.send(head, body)
    assert reply.status in statuses, (reply.status, reply.body)
    assert gw.upstream.reached() == []


async def test_head_of_an_allowed_get_is_forwarded(tmp_path: Path) -> None:
    async with trusted_gateway(tmp_path, RULES) as gw:
        reply = await gw.send("HEAD /crm/customers/1 HTTP/1.1")
        assert reply.status == 200
        assert [a.method for a in gw.upstream.reached()] == ["HEAD"]


async def test_head_needs_a_rule_for_get(tmp_path: Path) -> None:
    rules = """
- id: writes-only
  match: {methods: [POST], path: "/**"}
  action: allow
"""
    async with trusted_gateway(tmp_path, rules) as gw:
        assert (await gw.send("HEAD /crm/customers/1 HTTP/1.1")).status == 403
        assert gw.upstream.reached() == []


async def test_propfind_is_judged_as_a_write(tmp_path: Path) -> None:
    async with trusted_gateway(tmp_path, RULES, default="allow") as gw:
        reply = await gw.send("PROPFIND /crm/files/1 HTTP/1.1")
        assert reply.status == 200
        assert [a.method for a in gw.upstream.reached()] == ["PROPFIND"]
        await gw.harness.gateway.pipeline.settled()
        entries = await gw.harness.journal()
        assert [(e["method"], e["path"]) for e in entries] == [("PROPFIND", "/files/1")]
        assert (await gw.harness.engage(upstream="crm")).status_code == 200
        frozen = await gw.send("PROPFIND /crm/files/1 HTTP/1.1")
        assert frozen.status == 423
        assert len(gw.upstream.reached()) == 1


async def test_propfind_is_denied_where_the_default_denies(tmp_path: Path) -> None:
    async with trusted_gateway(tmp_path, RULES, default="deny") as gw:
        assert (await gw.send("PROPFIND /crm/files/1 HTTP/1.1")).status == 403
        assert gw.upstream.reached() == []
