"""Forms, queries and numbers read two ways (issue 17 items 1, 2, 9 and 13).

A form body or a query string a rule judges has one reading, as paths and JSON
do: a repeated name, names that differ only by case, ``name[]`` beside
``name``, ``;`` separators and names with leading or trailing spaces or ``+``
are 400; a lone spelling a lenient upstream reads as a judged name (``Force``,
``force[]``) is judged as that name. A JSON number a ``when`` compares that
does not survive a round trip through a double, and ``_method`` anywhere in a
body, are 400. A path segment that Java or .NET would compare equal to a
rule's literal without case (dotless i, dotted I) is 400. Each row is sent
byte for byte to a real gateway; nothing refused reaches the recording
upstream.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.model import Checkpoint, Decision, Verdict, new_id
from gateway.core.policy.schema import Approval
from gateway.services.call import Call
from gateway.services.held_calls import held_call
from tests.trust.recording import Trusted, trusted_gateway

RULES = r"""
- id: no-admin
  match: {path: "/admin/**"}
  action: deny
- id: small-refunds
  match: {methods: [POST], path: "/refunds", when: "int(request.body.amount) <= 1000"}
  action: allow
- id: small-charges
  match: {methods: [POST], path: "/charges", when: "request.body.amount <= 1000"}
  action: allow
- id: no-force
  match: {methods: [DELETE], path: "/customers/{id}", when: "has(request.query.force)"}
  action: deny
- id: delete
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: allow
- id: own-only
  match: {methods: [GET], path: "/tickets", when: "request.query.owner == 'bot'"}
  action: allow
- id: edit
  match: {methods: [PATCH, POST], path: "/customers/{id}"}
  action: allow
- id: held-refunds
  match: {methods: [POST], path: "/held-refunds"}
  action: hold
  undo: none
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
"""

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

REFUSED = [
    # (row id, request line, content type or None, body, statuses accepted)
    # item 1: repeated form fields
    ("form-repeated", "POST /refunds", FORM, b"amount=50000&amount=5", {400}),
    ("form-php-array", "POST /refunds", FORM, b"amount=5&amount[]=50000", {400}),
    ("form-php-array-encoded", "POST /refunds", FORM, b"amount=5&amount%5B%5D=50000", {400}),
    ("form-case-variant", "POST /refunds", FORM, b"amount=5&Amount=50000", {400}),
    ("form-plus-name", "POST /refunds", FORM, b"amount=5&+amount=50000", {400}),
    ("form-journaled-repeated", "PATCH /customers/1", FORM, b"plan=free&plan=pro", {400}),
    # item 2: query rules
    ("query-upper-first", "DELETE /customers/1?Force=1", None, b"", {400, 403}),
    ("query-upper", "DELETE /customers/1?FORCE=1", None, b"", {400, 403}),
    ("query-php-array", "DELETE /customers/1?force[]=1", None, b"", {400, 403}),
    ("query-php-array-encoded", "DELETE /customers/1?force%5B%5D=1", None, b"", {400, 403}),
    ("query-semicolon", "DELETE /customers/1?x=1;force=1", None, b"", {400}),
    ("query-plus-name", "DELETE /customers/1?+force=1", None, b"", {400}),
    ("query-case-pair", "GET /tickets?owner=bot&Owner=alice", None, b"", {400}),
    ("query-array-pair", "GET /tickets?owner=bot&owner[]=alice", None, b"", {400}),
    # item 9: Unicode case
    ("path-dotless-i", "GET /adm%C4%B1n/x", None, b"", {400}),
    ("path-dotted-capital-i", "GET /adm%C4%B0n/x", None, b"", {400}),
    # item 13: numbers and overrides
    ("number-past-a-double", "POST /charges", JSON, b'{"amount": 1000.0000000000000001}',
     {400}),
    ("json-method-override", "POST /customers/1", JSON, b'{"_method": "DELETE", "a": 1}', {400}),
    ("json-method-override-nested", "POST /customers/1", JSON,
     b'{"a": {"_METHOD": "DELETE"}}', {400}),
]


@pytest.mark.parametrize(("request_line", "content_type", "body", "statuses"),
                         [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_a_second_reading_never_reaches_the_upstream(
        gw: Trusted, request_line: str, content_type: str | None, body: bytes,
        statuses: set[int]) -> None:
    method, target = request_line.split()
    head = f"{method} /crm{target} HTTP/1.1"
    if content_type is not None:
        head += f"\nContent-Type: {content_type}"
    reply = await gw.send(head, body)
    assert reply.status in statuses, (reply.status, reply.body)
    assert gw.upstream.reached() == []


FORWARDED = [
    # (row id, request line, content type or None, body)
    ("form-one-reading", "POST /refunds", FORM, b"amount=5&note=a%3Bb"),
    ("form-nested-fields", "POST /customers/1", FORM, b"metadata[a]=1&metadata[b]=2"),
    ("query-one-reading", "DELETE /customers/1?reason=dup", None, b""),
    ("query-owner", "GET /tickets?owner=bot&page=2", None, b""),
    ("query-repeated-unjudged", "GET /customers?id=1&id=2", None, b""),
    ("number-exact", "POST /charges", JSON, b'{"amount": 1000.00}'),
    ("number-tenth", "POST /charges", JSON, b'{"amount": 0.1}'),
    ("unicode-elsewhere", "GET /files/%C4%B1", None, b""),
]


@pytest.mark.parametrize(("request_line", "content_type", "body"),
                         [r[1:] for r in FORWARDED], ids=[r[0] for r in FORWARDED])
async def test_one_reading_is_forwarded_unchanged(tmp_path: Path, request_line: str,
                                                  content_type: str | None,
                                                  body: bytes) -> None:
    async with trusted_gateway(tmp_path, RULES) as gw:
        method, target = request_line.split()
        head = f"{method} /crm{target} HTTP/1.1"
        if content_type is not None:
            head += f"\nContent-Type: {content_type}"
        reply = await gw.send(head, body)
        assert reply.status == 200, (reply.status, reply.body)
        [arrival] = gw.upstream.reached(method)
        assert arrival.body == body
        assert arrival.target == "/" + target.split("/", 1)[1]


HELD = [
    # (row id, content type, a body held by an older gateway that read it leniently)
    ("held-duplicate-key", JSON, b'{"amount":1,"amount":99999}'),
    ("held-case-variant-key", JSON, b'{"amount":1,"Amount":99999}'),
    ("held-method-override", JSON, b'{"amount":1,"_method":"DELETE"}'),
    ("held-repeated-form-field", FORM, b"amount=1&amount=99999"),
]


@pytest.mark.parametrize(("content_type", "body"), [r[1:] for r in HELD],
                         ids=[r[0] for r in HELD])
async def test_a_held_call_is_read_again_as_strictly_as_a_live_one(
        tmp_path: Path, content_type: str, body: bytes) -> None:
    """Issue 18: a held call is rebuilt with the parser live calls use, so one stored
    with a body of two readings (by a gateway that read it leniently) is not sent."""
    async with trusted_gateway(tmp_path, RULES) as gw:
        live = await gw.send(f"POST /crm/held-refunds HTTP/1.1\nContent-Type: {content_type}",
                             body)
        assert live.status == 400, live.body  # what a live call gets
        gateway = gw.harness.gateway
        upstream = gateway.policies.upstreams["crm"]
        call = Call(request_id=new_id(), agent="bot", agent_key=None, upstream="crm",
                    method="POST", raw_path="/held-refunds", query="",
                    headers=[("content-type", content_type)],
                    checkpoint=Checkpoint(None, None, None, None), buffered=body)
        decision = Decision(Verdict.HOLD, "held-refunds", "held", "r", "crm")
        held = held_call(upstream, call, decision, Approval())
        await gateway.approvals.create(held)
        approved = await gw.harness.admin.post(f"/v1/approvals/{held.id}/approve", json={},
                                               headers=gw.harness.as_role("approver"))
        assert approved.status_code == 400, approved.text
        assert gw.upstream.reached() == []
        assert await gw.harness.journal() == []
