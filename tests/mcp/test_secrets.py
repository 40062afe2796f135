"""A tool call's rollback puts secret-named fields back, as a REST rollback does.

The capture tool's state is journaled redacted; an undo built from it would send
``[REDACTED]`` to the upstream in place of the real value. The true state is kept
sealed beside it, and rollback compensates with that.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer

from gateway.settings import WebhookSettings
from tests.harness import serve_app, started_gateway, until
from tests.mcp.conftest import Rig
from tests.trust.test_secrets import KEY, Hooks, _store_text

RULES = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
default: deny
rules:
  - id: read
    match: {{tools: [get_account]}}
    action: allow
    effect: read
  - id: replace
    match: {{tools: [replace_account]}}
    action: allow
    capture: {{tool: get_account, arguments: {{id: "{{arguments.id}}"}}}}
    undo: {{tool: replace_account, arguments: prior}}
  - id: rotate
    match: {{tools: [rotate_key]}}
    action: allow
    capture: {{tool: get_account, arguments: {{id: "{{arguments.id}}"}}}}
    undo: {{tool: rotate_key, arguments: prior_fields}}
"""

TRUE_KEY = "sk-live-true-prior-value"


def accounts_server(accounts: dict[str, dict[str, Any]]) -> MCPServer:
    server = MCPServer("accounts")

    @server.tool()
    def get_account(id: str) -> dict[str, Any]:
        """One account, its API key included."""
        return dict(accounts[id])

    @server.tool()
    def replace_account(id: str, plan: str, api_key: str) -> dict[str, Any]:
        """Replace an account whole."""
        accounts[id] = {"id": id, "plan": plan, "api_key": api_key}
        return dict(accounts[id])

    @server.tool()
    def rotate_key(id: str, api_key: str) -> dict[str, Any]:
        """Set an account's API key."""
        accounts[id]["api_key"] = api_key
        return dict(accounts[id])

    return server


@pytest.mark.parametrize("tool, arguments", [
    ("replace_account", {"id": "a1", "plan": "free", "api_key": "sk-agent-set"}),
    ("rotate_key", {"id": "a1", "api_key": "sk-agent-set"}),
])
async def test_rolling_back_a_tool_call_restores_the_secret_it_overwrote(
        tmp_path: Path, tool: str, arguments: dict[str, Any]) -> None:
    accounts = {"a1": {"id": "a1", "plan": "pro", "api_key": TRUE_KEY}}
    app = accounts_server(accounts).streamable_http_app(stateless_http=True, json_response=True)
    async with serve_app(app, lifespan="on") as url:
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   {"tools.yaml": RULES.format(url=url)}) as gw:
            rig = Rig(gw, crm=None)  # type: ignore[arg-type]
            called = await rig.call(tool, arguments, headers={"X-Agent-Run": "run-s"})
            assert called.status_code == 200, called.text
            assert accounts["a1"]["api_key"] == "sk-agent-set"
            [entry] = await gw.journal(run="run-s")
            assert TRUE_KEY not in json.dumps(entry)  # shown redacted
            plan = await gw.admin.post("/v1/rollback", json={"run": "run-s", "dry_run": False},
                                       headers=gw.as_role("admin"))
            assert plan.status_code == 200, plan.text
            steps = plan.json()["plan"]["steps"]
            assert [s["status"] for s in steps] == ["applied"], steps
            assert TRUE_KEY not in plan.text  # the plan shows it redacted too
    assert accounts["a1"] == {"id": "a1", "plan": "pro", "api_key": TRUE_KEY}


HOLD_RULES = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
default: deny
rules:
  - id: rotate
    match: {{tools: [rotate_key]}}
    action: hold
    capture: {{tool: get_account, arguments: {{id: "{{arguments.id}}"}}}}
"""


async def test_a_held_tool_calls_proposed_change_shows_its_secret_arguments_redacted(
        tmp_path: Path) -> None:
    """What operators see of a held call: a REST body's secret-named fields are redacted
    in the proposed change, and so are a tool call's arguments (the exact call stays
    sealed; approving sends it as the agent did)."""
    accounts = {"a1": {"id": "a1", "plan": "pro", "api_key": TRUE_KEY}}
    app = accounts_server(accounts).streamable_http_app(stateless_http=True, json_response=True)
    async with serve_app(app, lifespan="on") as url:
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   {"tools.yaml": HOLD_RULES.format(url=url)}) as gw:
            rig = Rig(gw, crm=None)  # type: ignore[arg-type]
            held = await rig.call("rotate_key", {"id": "a1", "api_key": "sk-agent-set"})
            assert "held for approval" in held.text, held.text
            listed = await gw.admin.get("/v1/approvals", headers=gw.as_role("admin"))
            [item] = listed.json()["items"]
            shown = await gw.admin.get(f"/v1/approvals/{item['id']}",
                                       headers=gw.as_role("admin"))
            assert shown.status_code == 200, shown.text
            assert shown.json()["changes"] == [
                {"field": "api_key", "before": "[REDACTED]", "after": "[REDACTED]"}]
            assert "sk-agent-set" not in shown.text and TRUE_KEY not in shown.text
            approved = await gw.admin.post(f"/v1/approvals/{item['id']}/approve", json={},
                                           headers=gw.as_role("admin"))
            assert approved.status_code == 200, approved.text
    assert accounts["a1"]["api_key"] == "sk-agent-set"  # sent as the agent sent it


async def test_an_approved_tool_calls_answer_is_shown_and_stored_redacted(
        tmp_path: Path, store_url: str) -> None:
    """What the executed call answered, as operators, webhook receivers and the store see
    it: the tool's text content (the SDK's JSON of its result, or ``token=...`` text) is
    redacted as the journal redacts it, not only its structured content. The agent's
    status URL still gets the answer exactly (sealed)."""
    accounts = {"a1": {"id": "a1", "plan": "pro", "api_key": TRUE_KEY}}
    app = accounts_server(accounts).streamable_http_app(stateless_http=True, json_response=True)
    async with _holding(tmp_path, store_url, app) as (gw, hooks):
        approved, status, views = await _rotated_and_approved(gw, hooks)
        assert approved["response"]["status"] == 200
        assert "[REDACTED]" in approved["response"]["body"]
        assert "sk-agent-set" in status["response"]["body"]  # the agent's own answer
        admin = gw.as_role("admin")
        for entry in await gw.journal():
            views["trail"] = (await gw.admin.get(f"/v1/journal/{entry['id']}/trail",
                                                 headers=admin)).text
        stored = await _store_text(store_url, Path(store_url.split("///", 1)[-1]).parent)
    assert accounts["a1"]["api_key"] == "sk-agent-set"
    assert _leaked({**views, "store": stored}) == []


async def test_an_approved_tool_call_whose_answer_repeats_its_secret_argument_hides_it(
        tmp_path: Path, store_url: str) -> None:
    """A tool that answers in free text, repeating the secret argument it was given: no
    field name says it is a secret, but operators, webhooks and the store's readable
    columns must not show it; the agent's status URL still gets the answer exactly."""
    accounts = {"a1": {"id": "a1", "plan": "pro", "api_key": TRUE_KEY}}
    server = MCPServer("accounts")

    @server.tool()
    def rotate_key(id: str, api_key: str) -> str:
        """Set an account's API key."""
        accounts[id]["api_key"] = api_key
        return f"rotated: the key of {id} is now {api_key}"

    @server.tool()
    def get_account(id: str) -> dict[str, Any]:
        """One account, its API key included."""
        return dict(accounts[id])

    app = server.streamable_http_app(stateless_http=True, json_response=True)
    async with _holding(tmp_path, store_url, app) as (gw, hooks):
        approved, status, views = await _rotated_and_approved(gw, hooks)
        assert "the key of a1 is now [REDACTED]" in approved["response"]["body"]
        assert "is now sk-agent-set" in status["response"]["body"]  # exact, sealed
        stored = await _store_text(store_url, Path(store_url.split("///", 1)[-1]).parent)
    assert _leaked({**views, "store": stored}) == []


@asynccontextmanager
async def _holding(tmp_path: Path, store_url: str, app: Any) -> AsyncIterator[tuple[Any, Hooks]]:
    """A gateway holding ``app``'s writing tools (``HOLD_RULES``; on PostgreSQL with a
    journal key), its approvals' webhooks sent to ``Hooks`` of the test's."""
    hooks = Hooks()
    key = {"journal_key": KEY} if store_url.startswith("postgresql") else {}
    async with serve_app(hooks) as hook_url, serve_app(app, lifespan="on") as url:
        async with started_gateway(tmp_path, store_url, {"tools.yaml": HOLD_RULES.format(url=url)},
                                   approval_webhook=WebhookSettings(url=hook_url + "/hook"),
                                   **key) as gw:
            yield gw, hooks


def _leaked(texts: dict[str, str]) -> list[str]:
    """The names of the texts that show the secret the agent set."""
    return sorted(name for name, text in texts.items() if "sk-agent-set" in text)


async def _rotated_and_approved(gw: Any, hooks: Hooks,
                                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """``rotate_key`` held, then approved by an admin: the approve answer, the agent's
    status view of the call, and what operators and webhook receivers see, as text."""
    rig = Rig(gw, crm=None)
    held = await rig.call("rotate_key", {"id": "a1", "api_key": "sk-agent-set"})
    assert "held for approval" in held.text, held.text
    admin = gw.as_role("admin")
    [item] = (await gw.admin.get("/v1/approvals", headers=admin)).json()["items"]
    approved = await gw.admin.post(f"/v1/approvals/{item['id']}/approve", json={},
                                   headers=admin)
    assert approved.status_code == 200, approved.text
    status = await gw.agent.get(f"/_gateway/approvals/{item['id']}")
    await until(lambda: len(hooks.bodies) >= 2, "the held and executed webhooks")
    views = {
        "approve answer": approved.text,
        "approvals list": (await gw.admin.get("/v1/approvals", headers=admin)).text,
        "approval detail": (await gw.admin.get(f"/v1/approvals/{item['id']}",
                                               headers=admin)).text,
        "webhooks": "".join(hooks.bodies),
    }
    return approved.json(), status.json(), views
