"""Identity hygiene and the query credential (issue 17 items 6 and 12).

One agent key per call, and no agent's key reaching an upstream: a ``Basic``
pair of two keys, SigV4 with two ``Credential=``, another agent's key in an
``X_Gateway_Key`` header, in any header, in the query or in an old-style
``Authorization: AWS key:sig`` beside the caller's key are 400; the caller's
own key in a path segment is 400 (it would be forwarded and journaled). With
a ``query`` credential, the agent's own parameter of that name, however
spelt, never travels beside the injected one. Each row is checked at the
recording upstream.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from tests.harness import AGENT_KEY, OTHER_KEY
from tests.trust.recording import Trusted, trusted_gateway

RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sigv4(*keys: str) -> str:
    return ("AWS4-HMAC-SHA256 " + ", ".join(
        f"Credential={k}/20261202/us-east-1/s3/aws4_request" for k in keys)
        + ", SignedHeaders=host;x-amz-date, Signature=0123abcd")


REFUSED = [
    # (row id, request head, send X-Gateway-Key: AGENT_KEY too)
    ("basic-pair-of-two-keys", f"GET /crm/customers/1 HTTP/1.1\n"
                               f"Authorization: {basic(AGENT_KEY, OTHER_KEY)}", False),
    ("sigv4-two-credentials", f"GET /crm/customers/1 HTTP/1.1\n"
                              f"Authorization: {sigv4(AGENT_KEY, OTHER_KEY)}", False),
    ("underscore-gateway-key", f"GET /crm/customers/1 HTTP/1.1\nX_Gateway_Key: {OTHER_KEY}",
     True),
    ("other-key-in-any-header", f"GET /crm/customers/1 HTTP/1.1\nX-Forward-Token: {OTHER_KEY}",
     True),
    ("other-key-in-query", f"GET /crm/customers/1?token={OTHER_KEY} HTTP/1.1", True),
    ("aws-v2-authorization", f"GET /crm/customers/1 HTTP/1.1\nAuthorization: AWS {OTHER_KEY}:sig",
     True),
    ("own-key-in-path", f"GET /crm/customers/{AGENT_KEY} HTTP/1.1", True),
    ("own-key-in-path-of-a-write", f"PATCH /crm/customers/{AGENT_KEY} HTTP/1.1\n"
                                   "Content-Type: application/json", True),
]


@pytest.mark.parametrize(("head", "key"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
@pytest.mark.asyncio(loop_scope="module")  # one gateway for the rows (tests/trust/conftest.py)
async def test_a_second_identity_or_a_leaked_key_is_refused(gw: Trusted, head: str,
                                                            key: bool) -> None:
    reply = await gw.send(head, b'{"a":1}' if head.startswith("PATCH") else b"", key=key)
    assert reply.status == 400, (reply.status, reply.body)
    assert gw.upstream.reached() == []
    assert await gw.harness.journal() == []


QUERY_CREDENTIAL = "credentials: {query: {name: api_key, value: upstream-token}}\n"
SMUGGLED = [
    # (row id, the agent's query)
    ("encoded-underscore", "api%5Fkey=agent-choice"),
    ("upper-case", "API_KEY=agent-choice"),
    ("php-array", "api_key[]=agent-choice"),
    ("encoded-php-array", "api_key%5B%5D=agent-choice"),
    ("exact", "api_key=agent-choice"),
]


@pytest.mark.parametrize("query", [r[1] for r in SMUGGLED], ids=[r[0] for r in SMUGGLED])
async def test_only_the_injected_query_credential_reaches_the_upstream(tmp_path: Path,
                                                                       query: str) -> None:
    async with trusted_gateway(tmp_path, RULES, extra=QUERY_CREDENTIAL) as gw:
        reply = await gw.send(f"GET /crm/customers/1?page=2&{query} HTTP/1.1")
        assert reply.status == 200, reply.body
        [arrival] = gw.upstream.reached()
        sent = parse_qsl(arrival.target.partition("?")[2], keep_blank_values=True)
        assert [(n, v) for n, v in sent if n.lower().partition("[")[0] == "api_key"] == [
            ("api_key", "upstream-token")], arrival.target
        assert ("page", "2") in sent
