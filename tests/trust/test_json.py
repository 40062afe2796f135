"""JSON read two ways: a body a rule judges, or that is journaled, must have one
reading. Duplicate keys (also after unescaping), keys that differ only by case
or carry NUL, lone surrogates, nesting deeper than 64 and numbers outside the
float range are 400; a ``when`` meeting the wrong type denies (403); malformed
JSON is 400, never 500. Every refused row leaves the upstream untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trust.recording import Trusted, trusted_gateway

RULES = r"""
- id: small-refunds
  match: {methods: [POST], path: "/refunds", when: "request.body.amount <= 1000"}
  action: allow
- id: edit
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
- id: flagged-read
  match: {methods: [GET], path: "/search", when: "request.body.admin == false"}
  action: allow
"""

JSON = "application/json"
DEEP = b"[" * 10_000 + b"]" * 10_000
REFUSED = [
    # (row id, method path, content type, body, status)
    ("duplicate-key", "POST /refunds", JSON, rb'{"amount":99999,"amount":1}', 400),
    ("duplicate-after-unescape", "POST /refunds", JSON, rb'{"amount":99999,"\u0061mount":1}', 400),
    ("case-variant-key", "POST /refunds", JSON, rb'{"AMOUNT":99999,"amount":1}', 400),
    ("nul-in-key", "POST /refunds", JSON, rb'{"amount\u0000":99999,"amount":1}', 400),
    ("lone-high-surrogate", "POST /refunds", JSON, rb'{"amount":1,"note":"\ud800"}', 400),
    ("lone-low-surrogate-key", "POST /refunds", JSON, rb'{"amount":1,"\udc00":1}', 400),
    ("nesting-10k", "POST /refunds", JSON, DEEP, 400),
    ("nesting-65", "POST /refunds", JSON,
     b'{"amount":1,"n":' + b"[" * 64 + b"]" * 64 + b"}", 400),
    ("number-overflow", "POST /refunds", JSON, rb'{"amount":1e999}', 400),
    ("number-negative-overflow", "POST /refunds", JSON, rb'{"amount":-1e400}', 400),
    ("integer-overflow", "POST /refunds", JSON, b'{"amount":1' + b"0" * 400 + b"}", 400),
    ("nan", "POST /refunds", JSON, rb'{"amount":NaN}', 400),
    ("infinity", "POST /refunds", JSON, rb'{"amount":Infinity}', 400),
    ("truncated", "POST /refunds", JSON, rb'{"amount":1,', 400),
    ("invalid-utf8", "POST /refunds", JSON, b'{"amount":1,"n":"\xff"}', 400),
    ("duplicate-as-text", "POST /refunds", "text/plain", rb'{"amount":99999,"amount":1}', 400),
    ("duplicate-journaled-patch", "PATCH /customers/1", JSON, rb'{"plan":"free","plan":"pro"}',
     400),
    ("case-variant-nested", "PATCH /customers/1", JSON, rb'{"a":{"Role":"x","role":"y"}}', 400),
    ("duplicate-judged-read", "GET /search", JSON, rb'{"admin":false,"admin":true}', 400),
    ("bool-vs-number", "POST /refunds", JSON, rb'{"amount":true}', 403),
    ("string-vs-number", "POST /refunds", JSON, rb'{"amount":"1"}', 403),
    ("null-vs-number", "POST /refunds", JSON, rb'{"amount":null}', 403),
    ("list-vs-number", "POST /refunds", JSON, rb'{"amount":[1]}', 403),
    ("number-vs-bool", "GET /search", JSON, rb'{"admin":0}', 403),
    ("over-the-limit", "POST /refunds", JSON, rb'{"amount":99999}', 403),
    ("not-json-judged", "POST /refunds", "text/plain", b"amount=1", 403),
    ("two-content-types", "POST /refunds",
     "application/x-www-form-urlencoded\nContent-Type: application/json", b'{"amount":99999}',
     400),
]


@pytest.mark.parametrize(("request_line", "content_type", "body", "status"),
                         [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_body_with_two_readings_never_reaches_the_upstream(
        gw: Trusted, request_line: str, content_type: str, body: bytes, status: int) -> None:
    method, path = request_line.split()
    reply = await gw.send(f"{method} /crm{path} HTTP/1.1\nContent-Type: {content_type}", body)
    assert reply.status == status, (reply.status, reply.body)
    assert gw.upstream.reached() == []


ACCEPTED = [
    ("small", "POST /refunds", rb'{"amount":1}'),
    ("at-the-limit", "POST /refunds", rb'{"amount":1000}'),
    ("surrogate-pair", "POST /refunds", rb'{"amount":1,"note":"\ud83d\ude00"}'),
    ("nesting-64", "PATCH /customers/1", b'{"n":' + b"[" * 63 + b"]" * 63 + b"}"),
    ("distinct-keys", "PATCH /customers/1", rb'{"name":"a","plan":"b","a_b":1}'),
]


@pytest.mark.parametrize(("request_line", "body"), [r[1:] for r in ACCEPTED],
                         ids=[r[0] for r in ACCEPTED])
async def test_body_with_one_reading_is_forwarded_unchanged(tmp_path: Path, request_line: str,
                                                           body: bytes) -> None:
    async with trusted_gateway(tmp_path, RULES) as gw:
        method, path = request_line.split()
        reply = await gw.send(f"{method} /crm{path} HTTP/1.1\nContent-Type: {JSON}", body)
        assert reply.status == 200, reply.body
        assert [a.body for a in gw.upstream.reached(method)] == [body]
