"""Routing, authentication and header hygiene through the agent listener."""

from __future__ import annotations

import pytest

from gateway.demo.crm import CRM
from tests.harness import AGENT_KEY, OTHER_KEY, Harness
from tests.proxy.conftest import UPSTREAM_TOKEN


def upstream_log(crm: tuple[CRM, str]) -> list[dict]:
    return crm[0].log


async def test_read_is_forwarded_with_gateway_headers(gw: Harness, crm) -> None:
    response = await gw.agent.get("/crm/customers/cus_1?fields=all")
    assert response.status_code == 200
    assert response.json()["name"] == "Ada Lovelace"
    assert response.headers["x-gateway-decision"] == "allow"
    assert len(response.headers["x-gateway-request-id"]) == 32
    assert upstream_log(crm)[-1]["path"] == "/customers/cus_1"


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-Gateway-Key": "wrong"}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"X-Gateway-Key": AGENT_KEY}, 200),
    ({"Authorization": f"Bearer {AGENT_KEY}"}, 200),
])
async def test_agent_authentication(gw: Harness, headers: dict, status: int) -> None:
    gw.agent.headers.pop("X-Gateway-Key")
    response = await gw.agent.get("/crm/customers", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["x-gateway-decision"] == "deny"


async def test_key_stripped_and_credential_injected(gw: Harness, crm) -> None:
    response = await gw.agent.patch(
        "/crm/customers/cus_2", json={"plan": "pro"},
        headers={"Authorization": f"Bearer {AGENT_KEY}", "X-Gateway-Key": AGENT_KEY,
                 "X-Agent-Run": "r1", "X-Gateway-Anything": "x", "Connection": "x-drop-me",
                 "X-Drop-Me": "1", "X-Kept": "yes"})
    assert response.status_code == 200, response.text
    for seen in upstream_log(crm)[-2:]:  # the capture GET and the PATCH
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert headers["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
        assert AGENT_KEY not in str(headers)
        assert not any(k.startswith(("x-gateway-", "x-agent-")) for k in headers)
        assert "x-drop-me" not in headers
    assert {k.lower() for k in upstream_log(crm)[-1]["headers"]} >= {"x-kept"}


async def test_anonymous_agents_only_when_allowed(gw: Harness) -> None:
    gw.agent.headers.pop("X-Gateway-Key")
    assert (await gw.agent.get("/crm/customers")).status_code == 401
    gw.gateway.settings.allow_anonymous_agents = True
    anonymous = gw.gateway.proxy_app()
    import httpx
    async with httpx.AsyncClient(transport=httpx.ASGITransport(anonymous),
                                 base_url="http://gw") as client:
        assert (await client.get("/crm/customers")).status_code == 200
        assert (await client.get("/crm/customers", headers={"X-Gateway-Key": "bad"})
                ).status_code == 401


@pytest.mark.parametrize("path, status, code", [
    ("/nowhere/customers", 404, "unknown_upstream"),
    ("/Bad_Name/x", 404, "unknown_upstream"),
    ("/crm/customers/%2e%2e/deals", 400, "bad_request"),
    ("/crm/customers/a%2Fb", 400, "bad_request"),
    ("/crm/customers//cus_1", 400, "bad_request"),
])
async def test_unknown_or_ambiguous_targets_never_leave(gw: Harness, crm, path: str,
                                                         status: int, code: str) -> None:
    before = len(upstream_log(crm))
    response = await gw.agent.get(path)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert len(upstream_log(crm)) == before


async def test_method_override_header_is_a_bad_request(gw: Harness, crm) -> None:
    response = await gw.agent.post("/crm/customers", json={"name": "x"},
                                   headers={"X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_deny_rule_default_and_agent_scoping(gw: Harness, crm) -> None:
    denied = await gw.agent.delete("/crm/deals/deal_1")
    assert denied.status_code == 403
    assert denied.json()["error"] == {"code": "policy_denied", "rule": "no-deletes",
                                      "message": "denied by rule no-deletes"}
    by_default = await gw.agent.request("OPTIONS", "/crm/customers")
    assert by_default.status_code == 403 and by_default.json()["error"]["rule"] is None
    allowed_for_bot = await gw.agent.delete("/crm/customers/cus_3")
    assert allowed_for_bot.status_code == 204
    other = await gw.agent.delete("/crm/customers/cus_2", headers={"X-Gateway-Key": OTHER_KEY})
    assert other.status_code == 403 and other.json()["error"]["rule"] == "no-deletes"


@pytest.mark.parametrize("body, status, rule", [
    ({"amount": 20000, "name": "big"}, 403, "big-deals"),
    ({"amount": 5, "name": "small"}, 201, None),
    ({"name": "no amount"}, 403, "big-deals"),   # cannot be evaluated: denies, no fall-through
    ({"amount": "lots"}, 403, "big-deals"),      # type error
])
async def test_when_conditions(gw: Harness, body: dict, status: int, rule: str | None) -> None:
    response = await gw.agent.post("/crm/deals", json=body)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["error"]["rule"] == rule


async def test_body_that_is_not_json_denies_a_when_rule(gw: Harness) -> None:
    response = await gw.agent.post("/crm/deals", content=b"not json",
                                   headers={"content-type": "text/plain"})
    assert response.status_code == 403
    assert response.json()["error"]["rule"] == "big-deals"


async def test_gateway_health(gw: Harness) -> None:
    gw.agent.headers.pop("X-Gateway-Key")
    response = await gw.agent.get("/_gateway/health")
    assert response.status_code == 200
    assert response.json()["policy_revision"] == gw.gateway.policies.revision
