"""An MCP server that puts the gateway's injected credential in its answers: the agent,
the journal, approved calls' answers and the store see ``[REDACTED]`` instead."""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver import MCPServer

from tests.harness import serve_app, started_gateway
from tests.mcp.conftest import Rig

TOKEN = "mcpcredcanary56"
RULES = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
credentials: {{header: Authorization, value: "Bearer {token}"}}
default: deny
rules:
  - id: read
    match: {{tools: [whoami]}}
    action: allow
    effect: read
  - id: touch
    match: {{tools: [touch]}}
    action: allow
    capture: {{tool: whoami, arguments: {{}}}}
  - id: held
    match: {{tools: [touch_later]}}
    action: hold
"""


def echoing_server() -> MCPServer:
    server = MCPServer("echoing")
    said = f"you called with Bearer {TOKEN}"  # as a server that reflects its request would

    @server.tool()
    def whoami() -> dict[str, str]:
        """Who the server thinks called."""
        return {"caller": said}

    @server.tool()
    def touch() -> str:
        """A change."""
        return said

    @server.tool()
    def touch_later() -> str:
        """A change held for approval."""
        return said

    return server


async def test_a_credential_an_mcp_server_echoes_is_hidden(tmp_path: Path) -> None:
    app = echoing_server().streamable_http_app(stateless_http=True, json_response=True)
    async with serve_app(app, lifespan="on") as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
            {"tools.yaml": RULES.format(url=url, token=TOKEN)}) as gw:
        rig = Rig(gw, crm=None)  # type: ignore[arg-type]
        answers = [await rig.call("whoami", {}), await rig.call("touch", {})]
        held = await rig.call("touch_later", {})
        admin = gw.as_role("admin")
        [item] = (await gw.admin.get("/v1/approvals", headers=admin)).json()["items"]
        approved = await gw.admin.post(f"/v1/approvals/{item['id']}/approve", json={},
                                       headers=admin)
        status = await gw.agent.get(f"/_gateway/approvals/{item['id']}")
        journal = await gw.admin.get("/v1/journal", headers=admin)
        entries = [await gw.admin.get(f"/v1/journal/{e['id']}", headers=admin)
                   for e in journal.json()["items"]]
    for answer in answers:
        assert answer.status_code == 200 and "[REDACTED]" in answer.text, answer.text
    assert "held for approval" in held.text, held.text
    assert approved.status_code == 200 and "[REDACTED]" in approved.text, approved.text
    assert status.status_code == 200 and "[REDACTED]" in status.text, status.text
    assert len(entries) == 2 and "[REDACTED]" in entries[0].text + entries[1].text
    stored = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.glob("gateway.db*"))
    views = [a.text for a in (*answers, approved, status, journal, *entries)]
    assert [text for text in [*views, stored] if TOKEN in text] == []
