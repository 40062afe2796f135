"""Rollback restores secret-named fields: against the demo CRM and against json-server.

The journal shows a prior's ``api_key`` or ``password`` redacted; an undo built from
that view would erase them upstream while reporting ``applied``. Each row edits,
replaces or deletes a resource holding secret-named fields (top level and nested) and
rolls the run back: the upstream must hold them again, exactly. json-server runs as a
real process behind ``gateway serve`` (its key from ``GATEWAY_JOURNAL_KEY``).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo.crm import CRM, create_app
from tests.harness import policy_text, serve_app, started_gateway
from tests.thirdparty.conftest import (  # noqa: F401 (fixtures used by name)
    AGENT,
    Gateway,
    JsonServer,
    gateway_factory,
    json_server_command,
    json_server_factory,
)

KEY = base64.b64encode(b"r" * 32).decode()
UPSTREAM_TOKEN = "upstream-secret"
CRM_RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH, PUT, DELETE], path: "/customers/{id}"}
  action: allow
"""
SECRETS = {"api_key": "ak_live_ada_7f3c", "password": "hunter2",
           "billing": {"card_number": "4242424242424242", "cvc": "123", "zip": "N1"}}

# (row id, method, body): each run against a customer holding SECRETS
CRM_ROWS = [
    ("patch a plain field", "PATCH", {"plan": "free"}),
    ("patch a secret field", "PATCH", {"api_key": "ak_agent_overwrote"}),
    ("put without the secrets", "PUT", {"name": "Ada L.", "email": "a@x", "plan": "free",
                                        "balance": 0}),
    ("delete it", "DELETE", None),
]


@pytest.fixture
async def crm() -> AsyncIterator[tuple[CRM, str]]:
    app = create_app(token=UPSTREAM_TOKEN)
    async with serve_app(app) as url:
        yield app, url


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "updated_at"}


@pytest.mark.parametrize(("row", "method", "body"), CRM_ROWS, ids=[r[0] for r in CRM_ROWS])
async def test_the_demo_crm_gets_its_secret_fields_back(
        row: str, method: str, body: dict[str, Any] | None, tmp_path: Path, store_url: str,
        crm: tuple[CRM, str]) -> None:
    app, url = crm
    app.data["customers"]["cus_1"].update(copy.deepcopy(SECRETS))
    before = _plain(copy.deepcopy(app.data["customers"]["cus_1"]))
    text = policy_text(url, CRM_RULES, extra="volatile: [updated_at]\ncredentials: {header: "
                       f'Authorization, value: "Bearer {UPSTREAM_TOKEN}"}}\n')
    keyed = {"journal_key": KEY} if store_url.startswith("postgresql") else {}
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text}, **keyed) as gw:
        response = await gw.agent.request(method, "/crm/customers/cus_1", json=body,
                                          headers={"X-Agent-Run": "s"})
        assert response.status_code in (200, 204), response.text
        [entry] = await gw.journal(run="s")
        assert entry["prior"]["api_key"] == "[REDACTED]"  # the view
        plan = (await gw.admin.post("/v1/rollback", json={"run": "s", "dry_run": False},
                                    headers=gw.as_role("admin"))).json()["plan"]
        assert [s["status"] for s in plan["steps"]] == ["applied"], plan
        assert "hunter2" not in str(plan)
    assert _plain(app.data["customers"]["cus_1"]) == before


JS_INITIAL: dict[str, Any] = {
    "users": [
        {"id": 1, "name": "ada", "password": "pw-ada-1", "api_key": "key-ada-1",
         "settings": {"theme": "dark", "client_secret": "cs-ada-1"}},
        {"id": 2, "name": "bob", "password": "pw-bob-2", "token": "tok-bob-2"},
    ],
}
JS_RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit-users
  match: {methods: [PATCH, PUT, DELETE], path: "/users/{id}"}
  action: allow
"""


def test_json_server_gets_its_secret_fields_back(
        json_server_factory: Callable[[dict[str, Any]], JsonServer],  # noqa: F811
        gateway_factory: Callable[..., Gateway]) -> None:  # noqa: F811
    server = json_server_factory(copy.deepcopy(JS_INITIAL))
    gateway = gateway_factory({"js.yaml": policy_text(server.url, JS_RULES, upstream="js")},
                              env={"GATEWAY_JOURNAL_KEY": KEY})
    run = {**AGENT, "X-Agent-Run": "js-secrets"}
    with httpx.Client(base_url=f"{gateway.proxy}/js", headers=run, timeout=30) as agent:
        for method, path, body in [("PATCH", "/users/1", {"name": "ada2", "password": "new"}),
                                   ("PUT", "/users/1", {"name": "ada3"}),
                                   ("DELETE", "/users/2", None)]:
            response = agent.request(method, path, json=body)
            assert 200 <= response.status_code < 300, response.text
    assert "password" not in server.state()["users"][0]  # the PUT replaced the user
    journal = gateway.journal(run="js-secrets")
    assert "pw-ada-1" not in str(journal) and "tok-bob-2" not in str(journal)
    plan = gateway.rollback(run="js-secrets", dry_run=False)
    assert [s["status"] for s in plan["steps"]] == ["applied"] * 3, plan
    users = {u["id"]: u for u in server.on_disk()["users"]}
    assert users == {u["id"]: u for u in JS_INITIAL["users"]}


async def test_drift_compares_true_secret_values_and_names_only_the_field(
        tmp_path: Path, store_url: str, crm: tuple[CRM, str]) -> None:
    """A person rotates the key after the agent's write: the redacted views are equal, the
    true values are not. The step is a conflict naming ``api_key``, never its value."""
    app, url = crm
    app.data["customers"]["cus_1"].update(copy.deepcopy(SECRETS))
    text = policy_text(url, CRM_RULES, extra="volatile: [updated_at]\ncredentials: {header: "
                       f'Authorization, value: "Bearer {UPSTREAM_TOKEN}"}}\n')
    keyed = {"journal_key": KEY} if store_url.startswith("postgresql") else {}
    async with started_gateway(tmp_path, store_url, {"crm.yaml": text}, **keyed) as gw:
        response = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"},
                                        headers={"X-Agent-Run": "d"})
        assert response.status_code == 200
        app.data["customers"]["cus_1"]["api_key"] = "ak_rotated_by_a_person"
        plan = (await gw.admin.post("/v1/rollback", json={"run": "d", "dry_run": False},
                                    headers=gw.as_role("admin"))).json()["plan"]
    [step] = plan["steps"]
    assert step["status"] == "conflict" and step["detail"].endswith(": api_key"), step
    assert "ak_rotated" not in str(plan) and "ak_live" not in str(plan)
    assert app.data["customers"]["cus_1"]["api_key"] == "ak_rotated_by_a_person"  # left alone
