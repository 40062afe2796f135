"""``idempotency: {header: NAME}`` in an MCP policy file: every ``tools/call`` the gateway
sends carries NAME set to its journal entry id unless the agent set one, the ones it
makes itself included (an approved call, a rollback's compensation). Before, only an
agent's own allowed call carried it: the gateway's own calls go on a fresh SDK session,
which sent the credential's headers alone.

A real MCP server (the demo CRM's tools, the SDK's server on uvicorn) behind a recorder
of the HTTP requests it is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.demo.crm import create_app
from gateway.demo.mcp import create_app as create_mcp_app
from tests.harness import TOKENS, serve_app, started_gateway
from tests.mcp.conftest import RULES, Rig

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
KEY = "x-request-key"


class Recorder:
    """ASGI middleware: each POST's JSON-RPC method and headers, then the app as sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts: list[tuple[str | None, str | None, dict[str, str]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        method = parsed.get("method") if isinstance(parsed, dict) else None
        tool = (parsed.get("params") or {}).get("name") if method == "tools/call" else None
        self.posts.append((method, tool, {k.decode().lower(): v.decode()
                                          for k, v in scope["headers"]}))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)

    def keys(self, method: str, tools: tuple[str, ...] = ()) -> list[str | None]:
        return [headers.get(KEY) for m, tool, headers in self.posts
                if m == method and (not tools or tool in tools)]


async def journal(r: Rig) -> dict[str, dict[str, Any]]:
    response = await r.gw.admin.get("/v1/journal", params={"limit": 50}, headers=ADMIN)
    return {e["path"]: e for e in response.json()["items"] if e["decision"] != "rollback"}


async def test_every_tools_call_the_gateway_sends_carries_the_idempotency_key(
        tmp_path: Path) -> None:
    crm = create_app()
    recorder = Recorder(create_mcp_app(crm, stateless=False, json_response=False))
    async with serve_app(recorder, lifespan="on") as url:
        rules = RULES.replace("default: deny\n",
                              "default: deny\nidempotency: {{header: X-Request-Key}}\n")
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   {"tools.yaml": rules.format(url=url)}) as gw:
            r = Rig(gw, crm)
            # the agent's own calls: an allowed write, one with its own key, a held one
            assert (await r.call("update_customer", {"id": "cus_1", "plan": "free"})
                    ).status_code == 200
            assert (await r.call("update_customer", {"id": "cus_2", "plan": "free"},
                                 headers={KEY: "mine"})).status_code == 200
            held = await r.call("create_deal", {"customer_id": "cus_1", "title": "Big",
                                                "amount": 500})
            assert "held for approval" in held.text, held.text
            [pending] = (await gw.admin.get("/v1/approvals", params={"status": "pending"},
                                            headers=ADMIN)).json()["items"]
            approval = pending["id"]
            approved = await gw.admin.post(f"/v1/approvals/{approval}/approve", json={},
                                           headers=ADMIN)
            assert approved.status_code == 200 and approved.json()["status"] == "executed"
            entries = await journal(r)
            updates = [e for e in (await gw.admin.get(
                "/v1/journal", params={"limit": 50}, headers=ADMIN)).json()["items"]
                if e["path"] == "update_customer"][::-1]  # oldest first
            deal = entries["create_deal"]
            writes = ("update_customer", "create_deal")
            assert recorder.keys("tools/call", writes) == [updates[0]["id"], "mine", deal["id"]]
            assert set(recorder.keys("tools/call", ("get_customer",))) == {None}  # reads
            # the approved call's own session was set up without the key
            assert recorder.keys("initialize").count(None) == len(recorder.keys("initialize"))
            # a rollback's compensation is a write too
            rolled = await gw.admin.post("/v1/rollback", json={"entries": [updates[0]["id"]],
                                                                "dry_run": False},
                                         headers=ADMIN)
            assert rolled.status_code == 200, rolled.text
            [step] = rolled.json()["plan"]["steps"]
            assert step["status"] == "applied", step
            assert recorder.keys("tools/call", writes)[-1] == step["journal_id"]
