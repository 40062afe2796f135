"""Path variants against ``deny /admin/**`` then ``allow GET /**``: one row per variant.

Each row is sent byte for byte over a socket to a real gateway; a refused row
must leave the recording upstream untouched. A segment that differs from a
rule's literal only by case, Unicode compatibility form, trailing dots or
spaces, or ``;`` parameters is ambiguous (400); encoded controls, invalid
UTF-8 and encoded separators are 400; a spelling that decodes exactly to the
literal gets the literal's decision (403).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trust.recording import Trusted, trusted_gateway

RULES = """
- id: no-admin
  match: {path: "/admin/**"}
  action: deny
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
"""

REFUSED = [
    # (row id, target after /crm, status)
    ("upper-case", "/ADMIN/x", 400),
    ("mixed-case", "/AdMiN/x", 400),
    ("encoded-capital", "/%41DMIN/x", 400),
    ("encoded-exact", "/%61dmin/x", 403),
    ("encoded-middle", "/adm%69n/x", 403),
    ("semicolon-param", "/admin;x/y", 400),
    ("semicolon-empty", "/admin;/x", 400),
    ("encoded-semicolon", "/admin%3B/x", 400),
    ("encoded-semicolon-lower", "/admin%3bjsessionid=1/x", 400),
    ("trailing-dot", "/admin./x", 400),
    ("trailing-dots", "/admin../x", 400),
    ("encoded-dot", "/admin%2e/x", 400),
    ("encoded-dot-upper", "/admin%2E/x", 400),
    ("encoded-space", "/admin%20/x", 400),
    ("space-and-dot", "/admin%20./x", 400),
    ("nbsp", "/admin%C2%A0/x", 400),
    ("fullwidth", "/%EF%BD%81%EF%BD%84%EF%BD%8D%EF%BD%89%EF%BD%8E/x", 400),
    ("fullwidth-capital", "/%EF%BC%A1DMIN/x", 400),
    ("modifier-letter-a", "/%E1%B5%83dmin/x", 400),
    ("fullwidth-full-stop", "/admin%EF%BC%8E/x", 400),
    ("fullwidth-semicolon", "/admin%EF%BC%9Bx/y", 400),
    ("fullwidth-solidus", "/x%EF%BC%8Fadmin/y", 400),
    ("mixed-case-param-dot", "/Admin;v=1./x", 400),
    ("encoded-lf", "/admin%0a/x", 400),
    ("encoded-cr", "/admin%0D/x", 400),
    ("encoded-tab", "/admin%09/x", 400),
    ("encoded-del", "/admin%7f/x", 400),
    ("encoded-nul", "/admin%00/x", 400),
    ("encoded-c1-control", "/admin%C2%85/x", 400),
    ("zero-width-space", "/admin%E2%80%8B/x", 400),
    ("invalid-utf8", "/admin%ff/x", 400),
    ("overlong-utf8-dots", "/%C0%AE%C0%AE/admin/x", 400),
    ("lone-surrogate-utf8", "/admin%ED%A0%80/x", 400),
    ("bad-escape", "/admin%zz/x", 400),
    ("iis-u-escape", "/%u0061dmin/x", 400),
    ("encoded-slash", "/x%2Fadmin/y", 400),
    ("encoded-backslash", "/x%5Cadmin/y", 400),
    ("dot-dot", "/x/../admin/y", 400),
    ("encoded-dot-dot", "/x/%2e%2e/admin/y", 400),
    ("dot", "/./admin/y", 400),
    ("empty-segment", "//admin/y", 400),
    ("plain", "/admin/x", 403),
]


@pytest.mark.parametrize(("target", "status"), [(t, s) for _, t, s in REFUSED],
                         ids=[row for row, _, _ in REFUSED])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_variant_never_reaches_the_upstream(gw: Trusted, target: str, status: int) -> None:
    reply = await gw.send(f"GET /crm{target} HTTP/1.1")
    assert reply.status == status, reply.body
    assert gw.upstream.reached() == []
    if status == 400:
        assert reply.json()["error"]["code"] == "bad_request"
        assert reply.headers.get("connection") == "close"


FORWARDED = [
    # (row id, target after /crm, what the upstream receives)
    ("plain", "/customers/42", "/customers/42"),
    ("unreserved-escapes-decoded", "/customers/%34%32", "/customers/42"),
    ("lower-hex-normalised", "/files/a%2bb", "/files/a+b"),
    ("space-encoded", "/files/a%20b", "/files/a%20b"),
    ("utf8-kept", "/files/%C3%A9t%C3%A9", "/files/%C3%A9t%C3%A9"),
    ("semicolon-in-id-encoded", "/customers/42;x", "/customers/42%3Bx"),
    ("trailing-slash-kept", "/customers/", "/customers/"),
    ("query-kept", "/customers?page=2&q=a%20b", "/customers?page=2&q=a%20b"),
]


@pytest.mark.parametrize(("target", "sent"), [(t, s) for _, t, s in FORWARDED],
                         ids=[row for row, _, _ in FORWARDED])
@pytest.mark.asyncio(loop_scope="module")
async def test_what_is_judged_is_what_is_sent(gw: Trusted, target: str, sent: str) -> None:
    reply = await gw.send(f"GET /crm{target} HTTP/1.1")
    assert reply.status == 200, reply.body
    assert [a.target for a in gw.upstream.reached()] == [sent]


QUERY_RULES = """
- id: own-records
  match: {methods: [GET], path: "/records", when: "request.query.owner == 'bot'"}
  action: allow
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
"""
QUERIES = [
    # (row id, query, status): a query a rule judges must have one reading
    ("repeated", "owner=bot&owner=alice", 400),
    ("repeated-encoded", "owner=bot&%6Fwner=alice", 400),
    ("single", "owner=bot", 200),
]


@pytest.mark.parametrize(("query", "status"), [(q, s) for _, q, s in QUERIES],
                         ids=[row for row, _, _ in QUERIES])
async def test_judged_query_has_one_reading(tmp_path: Path, query: str, status: int) -> None:
    async with trusted_gateway(tmp_path, QUERY_RULES, default="deny") as gw:
        reply = await gw.send(f"GET /crm/records?{query} HTTP/1.1")
        assert reply.status == status, reply.body
        assert len(gw.upstream.reached()) == (1 if status == 200 else 0)


async def test_repeated_query_is_forwarded_where_no_rule_judges_it(tmp_path: Path) -> None:
    async with trusted_gateway(tmp_path, QUERY_RULES, default="deny") as gw:
        reply = await gw.send("GET /crm/tags?t=a&t=b HTTP/1.1")
        assert reply.status == 200
        assert [a.target for a in gw.upstream.reached()] == ["/tags?t=a&t=b"]
