"""Agent identity: every scheme SDKs use, one identity per call, and the key
never reaching an upstream (issue 7 item 5, issue 8).

One row per scheme: the call is made with the key where that scheme puts it
(plus, in some rows, a query parameter or another header carrying it), then
the recording upstream is searched, headers, query and body, for the key in
every request it got: the read, the write and its capture GET, a held call
executed on approval, and the rollback of the write. Each row runs with each
credential kind a policy can inject (header, basic, query) and with none. Then one row per ambiguous call:
two different keys, or an identity header sent twice, is 400 and nothing
reaches the upstream.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.harness import AGENT_KEY, OTHER_KEY, Harness, policy_text, serve_app, started_gateway
from tests.sdk.recorder import Recorder

RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PATCH], path: "/items/{id}"}
  action: allow
- id: held
  match: {methods: [POST], path: "/items/{id}/refund"}
  action: hold
  undo: none
"""
# the policy's credential kinds, and what every request upstream must then carry
CREDENTIALS = {
    "header": ('credentials: {header: Authorization, value: "Bearer upstream-token"}\n',
               ("authorization", "Bearer upstream-token"), ""),
    "basic": ('credentials: {basic: {username: svc, password: upstream-token}}\n',
              ("authorization", "Basic " + base64.b64encode(b"svc:upstream-token").decode()),
              ""),
    "query": ('credentials: {query: {name: api_key, value: upstream-token}}\n', None,
              "api_key=upstream-token"),
    "none": ("", None, ""),
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


SIGV4 = (f"AWS4-HMAC-SHA256 Credential={AGENT_KEY}/20261202/us-east-1/s3/aws4_request, "
         "SignedHeaders=host;x-amz-date, Signature=0123abcd")

# scheme, the headers that carry the key, a query that carries it too ("" for none)
SCHEMES = [
    ("x-gateway-key", [("X-Gateway-Key", AGENT_KEY)], ""),
    ("bearer", [("Authorization", f"Bearer {AGENT_KEY}")], ""),
    ("github token", [("Authorization", f"token {AGENT_KEY}")], ""),
    ("basic, key as user", [("Authorization", basic(AGENT_KEY, ""))], ""),
    ("basic, key as password", [("Authorization", basic("api", AGENT_KEY))], ""),
    ("basic, key as user, x as password", [("Authorization", basic(AGENT_KEY, "x"))], ""),
    ("x-api-key", [("X-Api-Key", AGENT_KEY)], ""),
    ("aws sigv4 access key id", [("Authorization", SIGV4), ("X-Amz-Date", "20261202T000000Z")],
     ""),
    ("the same key in two schemes", [("X-Gateway-Key", AGENT_KEY),
                                     ("Authorization", f"Bearer {AGENT_KEY}")], ""),
    ("key also in the query", [("X-Gateway-Key", AGENT_KEY)], f"api_key={AGENT_KEY}&page=2"),
    ("key also in another header", [("X-Api-Key", AGENT_KEY),
                                    ("X-Custom-Auth", f"k={AGENT_KEY}")], ""),
]

# an ambiguous identity: 400, nothing forwarded
AMBIGUOUS = [
    ("gateway key and another bearer", [("X-Gateway-Key", AGENT_KEY),
                                        ("Authorization", f"Bearer {OTHER_KEY}")]),
    ("gateway key and an unknown bearer", [("X-Gateway-Key", AGENT_KEY),
                                           ("Authorization", "Bearer sk-someone-else")]),
    ("x-gateway-key twice", [("X-Gateway-Key", AGENT_KEY), ("X-Gateway-Key", AGENT_KEY)]),
    ("authorization twice", [("Authorization", f"Bearer {AGENT_KEY}"),
                             ("Authorization", f"Bearer {AGENT_KEY}")]),
    ("x-api-key twice", [("X-Api-Key", AGENT_KEY), ("X-Api-Key", OTHER_KEY)]),
    ("api key and basic of another", [("X-Api-Key", AGENT_KEY),
                                      ("Authorization", basic(OTHER_KEY, ""))]),
    ("sigv4 and a gateway key", [("X-Gateway-Key", OTHER_KEY), ("Authorization", SIGV4)]),
    ("token and x-api-key", [("Authorization", f"token {AGENT_KEY}"), ("X-Api-Key", OTHER_KEY)]),
]


@pytest.fixture
async def upstream() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    async with serve_app(recorder) as url:
        recorder.url = url
        recorder.seed({"/items/1": {"id": "1", "name": "widget", "price": 5}})
        yield recorder


async def gateway(tmp_path: Path, recorder: Recorder, credential: str) -> AsyncIterator[Harness]:
    text = policy_text(recorder.url, RULES, extra=CREDENTIALS[credential][0])
    (tmp_path / "db").mkdir(exist_ok=True)
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'g.db'}",
                               {"crm.yaml": text}) as harness:
        yield harness


def nowhere(recorder: Recorder) -> None:
    assert recorder.seen
    for seen in recorder.seen:
        for name, value in seen.headers:
            assert AGENT_KEY not in value, (seen.method, seen.path, name, value)
        assert AGENT_KEY not in seen.query, (seen.method, seen.path, seen.query)
        assert AGENT_KEY.encode() not in seen.body, (seen.method, seen.path)


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize(("scheme", "headers", "query"), SCHEMES, ids=[s[0] for s in SCHEMES])
async def test_the_key_is_read_from_every_scheme_and_never_leaves(
        tmp_path: Path, upstream: Recorder, scheme: str, headers: list[tuple[str, str]],
        query: str, credential: str) -> None:
    async for gw in gateway(tmp_path, upstream, credential):
        agent = httpx.AsyncClient(transport=httpx.ASGITransport(gw.gateway.proxy_app()),
                                  base_url="http://gateway")
        suffix = f"?{query}" if query else ""
        read = await agent.get(f"/crm/items/1{suffix}", headers=headers)
        assert read.status_code == 200, read.text
        write = await agent.patch(f"/crm/items/1{suffix}", json={"price": 7}, headers=headers)
        assert write.status_code == 200, write.text
        assert write.headers["x-gateway-decision"] == "allow"
        held = await agent.post(f"/crm/items/1/refund{suffix}", json={"amount": 1},
                                headers=headers)
        assert held.status_code == 202, held.text
        approval = held.json()["approval"]["id"]
        approved = await gw.admin.post(f"/v1/approvals/{approval}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.json()["status"] == "executed", approved.text
        [entry] = [e for e in await gw.journal() if e["method"] == "PATCH"]
        assert entry["agent"] == "bot"
        plan = await gw.admin.post("/v1/rollback", json={"entries": [entry["id"]],
                                                         "dry_run": False},
                                   headers=gw.as_role("admin"))
        assert [s["status"] for s in plan.json()["plan"]["steps"]] == ["applied"], plan.text
        await agent.aclose()
    assert upstream.state("/items/1")["price"] == 5  # rolled back
    methods = [(s.method, s.path) for s in upstream.seen]
    assert methods.count(("GET", "/items/1")) >= 2  # the read and the capture
    assert ("POST", "/items/1/refund") in methods  # the approved call
    assert methods.count(("PUT", "/items/1")) == 1  # the rollback
    nowhere(upstream)
    _, header, param = CREDENTIALS[credential]
    for seen in upstream.seen:  # the read, capture, write, approved call and rollback alike
        if header is not None:
            assert header in seen.headers, (seen.method, seen.path)
        if param:
            assert param in seen.query.split("&"), (seen.method, seen.path, seen.query)


@pytest.mark.parametrize(("case", "headers"), AMBIGUOUS, ids=[a[0] for a in AMBIGUOUS])
async def test_two_identities_are_refused(tmp_path: Path, upstream: Recorder, case: str,
                                          headers: list[tuple[str, str]]) -> None:
    async for gw in gateway(tmp_path, upstream, credential="none"):
        agent = httpx.AsyncClient(transport=httpx.ASGITransport(gw.gateway.proxy_app()),
                                  base_url="http://gateway")
        for method in ("GET", "PATCH"):
            response = await agent.request(method, "/crm/items/1", json={"price": 9},
                                           headers=headers)
            assert response.status_code == 400, (method, response.text)
            assert response.json()["error"]["code"] == "bad_request"
        await agent.aclose()
    assert upstream.seen == []
