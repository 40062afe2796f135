"""An injected credential the upstream echoes back (a ``Location`` or ``Link`` with the
query, a ``"next"`` pagination URL, a reflected header) reaches neither the agent nor
the journal nor the store: it is ``[REDACTED]`` wherever it appears, also split across
two chunks of a streamed read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from gateway.core.model import Checkpoint
from gateway.core.policy.loader import load_policy_set
from gateway.ports import UpstreamResponse
from gateway.services.call import Call
from gateway.upstreams.rest import RestSender
from tests.harness import policy_text, serve_app, settings_for, started_gateway

SECRET = "q/cred+canary 12"  # percent-encoded in a URL: every spelling must go
SPELLINGS = (SECRET, quote(SECRET, safe=""), quote_plus(SECRET, safe=""))
HEADER_SECRET = "hdrcredcanary34"
RULES = """
- id: events
  match: {methods: [GET], path: "/events"}
  action: allow
  stream: true
- id: reads
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PATCH], path: "/items/{id}"}
  action: allow
- id: create
  match: {methods: [POST], path: "/items"}
  action: allow
  undo: none
- id: later
  match: {methods: [PUT], path: "/items/{id}"}
  action: hold
"""
QUERY = f'credentials: {{query: {{name: api_key, value: "{SECRET}"}}}}\n'
HEADER = f'credentials: {{header: X-Api-Token, value: "Token {HEADER_SECRET}"}}\n'


class Echoing:
    """An upstream that echoes the request: its query in ``Location``, ``Link`` and a
    ``next`` field, its headers in the body (as httpbin's /anything does)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        q = scope["query_string"].decode()
        if scope["path"] == "/events":  # a stream whose echo is split across two chunks
            line = f"data: next=/events?{q}\n\n".encode()
            cut = line.index(quote(SECRET, safe="").encode()) + 4
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": line[:cut], "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": line[cut:]})
            return
        body = json.dumps({"id": "x1", "next": f"http://upstream/items?{q}&page=2",
                           "headers": {k.decode(): v.decode() for k, v in scope["headers"]}})
        await send({"type": "http.response.start",
                    "status": 201 if scope["method"] == "POST" else 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"location", f"/items/x1?{q}".encode()),
                                (b"link", f'</items?{q}&page=2>; rel="next"'.encode())]})
        await send({"type": "http.response.body", "body": body.encode()})


def leaked(text: str, secrets: tuple[str, ...] = SPELLINGS) -> list[str]:
    return [s for s in secrets if s in text]


def stored(tmp_path: Path) -> str:
    return b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*")).decode("latin-1")


async def test_an_echoed_query_credential_reaches_neither_agent_nor_journal(
        tmp_path: Path) -> None:
    async with serve_app(Echoing()) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=QUERY)}) as gw:
        created = await gw.agent.post("/api/items", json={"a": 1})  # a write's answer
        edited = await gw.agent.patch("/api/items/x1", json={"a": 2})  # capture + answer
        read = await gw.agent.get("/api/items", params={"page": "1"})  # relayed read
        held = await gw.agent.put("/api/items/x1", json={"a": 3})
        admin = gw.as_role("admin")
        [item] = (await gw.admin.get("/v1/approvals", headers=admin)).json()["items"]
        approved = await gw.admin.post(f"/v1/approvals/{item['id']}/approve", json={},
                                       headers=admin)  # its stored answer
        status = await gw.agent.get(f"/_gateway/approvals/{item['id']}")  # the agent's
        journal = await gw.admin.get("/v1/journal", headers=gw.as_role("admin"))
        entries = [await gw.admin.get(f"/v1/journal/{e['id']}", headers=gw.as_role("admin"))
                   for e in journal.json()["items"]]
    for response in (created, edited, read):
        assert response.status_code in (200, 201), response.text
        shown = response.text + json.dumps(dict(response.headers))
        assert leaked(shown) == [], shown
        assert "api_key=[REDACTED]" in response.headers["location"]
        assert "api_key=[REDACTED]&page=2" in response.json()["next"]
        assert "[REDACTED]" in response.headers["link"]
        assert int(response.headers["content-length"]) == len(response.content)  # told again
    assert held.status_code == 202, held.text
    for view in (approved, status):
        assert view.status_code == 200 and "api_key=[REDACTED]" in view.text, view.text
    assert len(journal.json()["items"]) == 3
    for view in (approved, status, journal, *entries):
        assert view.status_code == 200 and leaked(view.text) == [], view.text
    assert "[REDACTED]" in entries[0].text
    assert leaked(stored(tmp_path)) == []


async def test_a_reflected_header_credential_is_hidden(tmp_path: Path) -> None:
    async with serve_app(Echoing()) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=HEADER)}) as gw:
        created = await gw.agent.post("/api/items", json={"a": 1})
        read = await gw.agent.get("/api/items")
        journal = await gw.admin.get("/v1/journal", headers=gw.as_role("admin"))
    for response in (created, read):
        assert response.status_code in (200, 201), response.text
        assert response.json()["headers"]["x-api-token"] == "[REDACTED]"
    assert leaked(journal.text + stored(tmp_path), (HEADER_SECRET,)) == []


async def test_an_echo_split_across_two_chunks_of_a_stream_is_hidden(tmp_path: Path) -> None:
    app = Echoing()
    async with serve_app(app) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=QUERY)}) as gw, \
            serve_app(gw.gateway.proxy_app()) as proxy, \
            httpx.AsyncClient(base_url=proxy, headers=dict(gw.agent.headers)) as agent, \
            agent.stream("GET", "/api/events") as response:
        # a real socket: httpx's ASGITransport would buffer the whole response
        chunks = response.aiter_raw()
        first = await chunks.__anext__()  # relayed while the upstream holds the rest
        app.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert first.startswith(b"data: next=/events?api_key=")
    assert first + rest == b"data: next=/events?api_key=[REDACTED]\n\n", first + rest


class Answering:
    """An upstream client that answers every request with one streamed response."""

    def __init__(self) -> None:
        self.response: UpstreamResponse | None = None

    async def request(self, method: str, url: str, headers: Any, body: Any,
                      **options: Any) -> UpstreamResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: " + SECRET.encode() + b"\n\n"
        self.response = UpstreamResponse(200, [("content-length", "24")], stream=chunks())
        return self.response


@pytest.mark.parametrize(("credential", "hidden"), [
    ("", False),
    ('credentials: {header: X-Api-Token, value: ""}\n', False),
    ("credentials: {aws_sigv4: {access_key_id: a, secret_access_key: s, region: r, "
     "service: s3}}\n", False),  # the secret key never goes on the wire
    (QUERY, True),
])
async def test_only_an_upstream_with_a_credential_has_its_answers_read(
        tmp_path: Path, credential: str, hidden: bool) -> None:
    """Without a credential on the wire, the client's response (its stream) is the one
    relayed: no per-chunk work on the read path."""
    policies, problems = load_policy_set(
        {"api.yaml": policy_text("http://127.0.0.1:9", RULES, upstream="api",
                                 extra=credential)}, {})
    assert policies is not None, problems
    client = Answering()
    sender = RestSender(settings_for(tmp_path, "sqlite+aiosqlite:///unused"), client)
    call = Call(request_id="r", agent="bot", agent_key=None, upstream="api", method="GET",
                raw_path="/events", query="", headers=[], checkpoint=Checkpoint())
    response = await sender.relay(policies.upstreams["api"], call)
    assert (response is not client.response) is hidden
    body = await response.read()
    assert (SECRET.encode() in body) is not hidden


class Worded:
    """An upstream whose answer holds ordinary words, and the request's headers."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"label": "a table about abacus",
                           "headers": {k.decode(): v.decode() for k, v in scope["headers"]}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


async def test_a_credential_too_short_to_replace_leaves_answers_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A two-letter token would be replaced wherever those letters occur: it is not, and
    ``policy check`` says its echoes are not hidden; the header's whole value still is."""
    short = 'credentials: {header: X-Api-Token, value: "Token ab"}\n'
    async with serve_app(Worded()) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=short)}) as gw:
        read = await gw.agent.get("/api/items")
    assert read.status_code == 200, read.text
    assert read.json()["label"] == "a table about abacus"  # not t[REDACTED]le
    assert read.json()["headers"]["x-api-token"] == "[REDACTED]"  # "Token ab", as sent
    from gateway.cli import main
    assert main(["policy", "check", str(tmp_path / "policies")]) == 0
    [warning] = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert "shorter than 4 characters" in warning and "'ab'" not in warning, warning
