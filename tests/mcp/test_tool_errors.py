"""A tool's error text is quoted into errors (the agent's, the journal's, a rollback
step's): a secret in it is ``[REDACTED]`` there as everywhere else, whether it is a
secret-named field (``api_key=...``), a secret argument the tool repeats, or the
gateway's own credential."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from gateway.core.policy.loader import compile_upstream
from gateway.core.policy.mcp_schema import McpPolicyFile
from gateway.errors import UpstreamLost
from gateway.settings import Settings
from gateway.upstreams.mcp import McpSender
from tests.harness import serve_app, started_gateway
from tests.mcp.conftest import Rig

TOKEN = "mcpcredcanary78"
API_KEY = "sk-live-apikeycanary"
ARGUMENT = "argsecretcanary9"
RULES = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
credentials: {{header: Authorization, value: "Bearer {token}"}}
default: deny
rules:
  - id: touch
    match: {{tools: [touch]}}
    action: allow
    capture: {{tool: lookup, arguments: {{id: "{{arguments.id}}", token: "{{arguments.token}}"}}}}
  - id: refuse
    match: {{tools: [refuse, fail]}}
    action: allow
"""


def failing_server() -> MCPServer:
    server = MCPServer("failing")

    def said(token: str) -> str:  # as a server that quotes its request and its config
        return f"no account for {token} (sent Bearer {TOKEN}; upstream api_key={API_KEY})"

    @server.tool()
    def lookup(id: str, token: str) -> dict[str, Any]:
        """The capture tool: it fails, quoting what it was sent."""
        raise ToolError(said(token))

    @server.tool()
    def touch(id: str, token: str) -> str:
        """A change (never reached: its capture fails)."""
        return "touched"

    @server.tool()
    def refuse(id: str, token: str) -> str:
        """Fails with a JSON-RPC error."""
        raise MCPError(code=-32000, message=said(token))

    @server.tool()
    def fail(id: str, token: str) -> str:
        """Fails with ``isError``."""
        raise ToolError(said(token))

    return server


def leaked(text: str) -> list[str]:
    return [s for s in (TOKEN, API_KEY, ARGUMENT) if s in text]


async def test_a_tool_error_quoted_into_errors_hides_its_secrets(tmp_path: Path) -> None:
    app = failing_server().streamable_http_app(stateless_http=True, json_response=True)
    async with serve_app(app, lifespan="on") as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
            {"tools.yaml": RULES.format(url=url, token=TOKEN)}) as gw:
        rig = Rig(gw, crm=None)  # type: ignore[arg-type]
        arguments = {"id": "a1", "token": ARGUMENT}
        captured = await rig.call("touch", arguments)
        refused = await rig.call("refuse", arguments)
        failed = await rig.call("fail", arguments)
        admin = gw.as_role("admin")
        journal = await gw.admin.get("/v1/journal", headers=admin)
        entries = [await gw.admin.get(f"/v1/journal/{e['id']}", headers=admin)
                   for e in journal.json()["items"]]
    assert captured.status_code == 200 and "capture_failed" in captured.text, captured.text
    assert "no account for [REDACTED]" in captured.text, captured.text
    assert "api_key=[REDACTED]" in captured.text, captured.text
    assert leaked(captured.text) == []
    errors = {e.json()["tool"] if "tool" in e.json() else e.json().get("path"): e.json()["error"]
              for e in entries}
    assert len(entries) == 2, errors  # refuse and fail (a failed capture sends nothing)
    for error in errors.values():
        assert error is not None and "api_key=[REDACTED]" in error, errors
        assert leaked(error) == [], errors
    for answer in (refused, failed):  # the tool's answer as it gave it, but the credential
        assert answer.status_code == 200 and ARGUMENT in answer.text, answer.text
        assert TOKEN not in answer.text
    views = [v.text for v in (journal, *entries)]
    stored = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.glob("gateway.db*"))
    assert [text for text in [*views, stored] if leaked(text)] == []


async def test_an_sdk_error_quoting_the_server_is_logged_without_secrets(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An answer the SDK could not read (its validation error quotes the input) is logged
    redacted: neither the credential the server echoed nor a secret-named field."""
    from tests.mcp.test_sender_outcomes import _patch, _Session

    said = f"1 validation error: input_value='Bearer {TOKEN}', api_key={API_KEY}"
    _patch(monkeypatch, _Session("call", ValueError(said)))
    spec = McpPolicyFile.model_validate(yaml.safe_load(RULES.format(url="http://127.0.0.1:9",
                                                                    token=TOKEN)))
    upstream = compile_upstream(spec, "tools.yaml", {})
    sender = McpSender(Settings(), None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "gateway.mcp"), pytest.raises(UpstreamLost):
        await sender.call_tool(upstream, "touch", {"id": "a1"}, 5.0)
    [record] = [r for r in caplog.records if r.name == "gateway.mcp"]
    assert "input_value='[REDACTED]'" in record.getMessage(), record.getMessage()
    assert leaked(record.getMessage()) == []
