"""The MCP reader against a real SDK server: what the SDK's client does not exercise.

Batches of 2025-03-26 judged message by message, sessions passed through, SSE
answers relayed and filtered, routing headers that disagree with the body,
refusals as tool errors with ``X-Gateway-Decision``, a hold's status URL, and
a tool call's rollback refusing to overwrite a later change.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.core import mcp
from tests.harness import TOKENS
from tests.mcp.conftest import Rig

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


def result_of(response: Any) -> dict[str, Any]:
    answer = mcp.response_in(response.content, response.headers.get("content-type"), mcp.ANY_ID)
    assert answer is not None, response.text
    return answer


async def handshake(rig: Rig, version: str) -> dict[str, str]:
    """A session at ``version``: initialize, then initialized; the headers that carry it on."""
    init = await rig.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}})
    assert init.status_code == 200, init.text
    assert init.headers["x-gateway-decision"] == "allow"
    assert result_of(init)["result"]["protocolVersion"] == version
    session = {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": version}
    done = await rig.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert done.status_code == 202
    return session


async def test_a_2025_03_26_batch_is_judged_message_by_message(sessions_sse: Rig) -> None:
    rig = sessions_sse
    session = await handshake(rig, "2025-03-26")
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "get_customer", "arguments": {"id": "cus_1"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "delete_customer", "arguments": {"id": "cus_1"}}},
        {"jsonrpc": "2.0", "method": "notifications/progress",
         "params": {"progressToken": "t", "progress": 1}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "update_customer", "arguments": {"id": "cus_2", "plan": "pro"}}},
    ]
    response = await rig.post(batch, session)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-decision"] == "deny"  # the batch's gravest decision
    answers = response.json()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"]["structuredContent"]["id"] == "cus_1"
    assert answers[1]["result"]["isError"] is True
    assert "denied by default" in answers[1]["result"]["content"][0]["text"]
    assert answers[2]["result"]["structuredContent"]["plan"] == "pro"
    assert rig.writes() == [("PATCH", "/customers/cus_2")]
    [entry] = await rig.gw.journal()
    assert (entry["method"], entry["path"], entry["prior"]["plan"]) == (
        "tools/call", "update_customer", "enterprise")


async def test_sse_answers_are_relayed_and_tools_list_is_filtered_in_them(
        sessions_sse: Rig) -> None:
    rig = sessions_sse
    session = await handshake(rig, "2025-11-25")
    read = await rig.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                           "params": {"name": "get_customer", "arguments": {"id": "cus_3"}}},
                          session)
    assert read.headers["content-type"].startswith("text/event-stream")
    assert result_of(read)["result"]["structuredContent"]["name"] == "Alan Turing"
    listed = await rig.post({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}, session)
    assert listed.headers["content-type"].startswith("text/event-stream")
    names = sorted(t["name"] for t in result_of(listed)["result"]["tools"])
    assert names == ["create_deal", "get_customer", "get_deal", "search_customers",
                     "update_customer"]


async def test_a_filtered_tools_list_is_never_shared_between_agents(stateless_json: Rig) -> None:
    listed = await stateless_json.post(stateless_json.envelope("tools/list"))
    result = listed.json()["result"]
    assert result["cacheScope"] == "private"
    assert "delete_customer" not in [t["name"] for t in result["tools"]]


async def test_refusals_are_tool_errors_with_the_decision_in_the_header(
        stateless_json: Rig) -> None:
    rig = stateless_json
    denied = await rig.call("delete_customer", {"id": "cus_1"})
    assert denied.status_code == 200 and denied.headers["x-gateway-decision"] == "deny"
    assert denied.json()["result"]["isError"] is True
    held = await rig.call("create_deal", {"customer_id": "cus_1", "title": "T", "amount": 1})
    assert held.headers["x-gateway-decision"] == "hold"
    text = held.json()["result"]["content"][0]["text"]
    approval = text.split("approval ", 1)[1].split(" ", 1)[0]
    assert f"/_gateway/approvals/{approval}" in text and "pending" in text
    status = await rig.gw.agent.get(f"/_gateway/approvals/{approval}")
    assert status.json()["status"] == "pending"
    shown = (await rig.gw.admin.get(f"/v1/approvals/{approval}", headers=ADMIN)).json()
    assert (shown["method"], shown["path"]) == ("tools/call", "create_deal")
    assert {"field": "amount", "before": None, "after": 1} in shown["changes"]
    approved = await rig.gw.admin.post(f"/v1/approvals/{approval}/approve", json={},
                                       headers=ADMIN)
    assert approved.status_code == 200, approved.text
    status = (await rig.gw.agent.get(f"/_gateway/approvals/{approval}")).json()
    assert status["status"] == "executed"
    answer = json.loads(status["response"]["body"])
    assert answer["id"] == held.json()["id"] and answer["result"]["structuredContent"]["amount"] == 1
    assert rig.writes() == [("POST", "/deals")]
    await rig.gw.engage()
    frozen = await rig.call("update_customer", {"id": "cus_1", "plan": "x"})
    assert frozen.headers["x-gateway-decision"] == "frozen"
    assert "writes are frozen" in frozen.json()["result"]["content"][0]["text"]
    allowed = await rig.call("get_customer", {"id": "cus_1"})
    assert allowed.headers["x-gateway-decision"] == "allow"
    assert rig.writes() == [("POST", "/deals")]


async def test_routing_headers_must_agree_with_the_body(stateless_json: Rig) -> None:
    rig = stateless_json
    body = rig.envelope("tools/call", {"name": "update_customer",
                                       "arguments": {"id": "cus_1", "plan": "x"}})
    lying = await rig.post(body, {"mcp-name": "get_customer"})
    assert lying.status_code == 400 and lying.json()["error"]["code"] == "bad_request"
    method = await rig.post(body, {"mcp-method": "tools/list"})
    assert method.status_code == 400
    unnamed = await rig.post(rig.envelope("tools/list"), {"mcp-name": "update_customer"})
    assert unnamed.status_code == 400, unnamed.text  # tools/list names nothing
    assert rig.writes() == [] and rig.crm.log == []


async def test_messages_that_readers_could_disagree_on_are_refused(stateless_json: Rig) -> None:
    rig = stateless_json
    twice = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_customer",'
             b'"name":"update_customer","arguments":{"id":"cus_1","plan":"x"}}}')
    refused = await rig.post(None, raw=twice)
    assert refused.status_code == 400 and "duplicate key" in refused.json()["error"]["message"]
    elsewhere = await rig.gw.agent.post("/tools/other", json={"jsonrpc": "2.0", "id": 1,
                                                               "method": "tools/list"})
    assert elsewhere.status_code == 404
    assert rig.crm.log == []


async def test_rollback_of_a_tool_call_refuses_to_overwrite_a_later_change(
        stateless_json: Rig) -> None:
    rig = stateless_json
    done = await rig.call("update_customer", {"id": "cus_1", "plan": "team"},
                          {"x-agent-run": "drift"})
    assert done.json()["result"]["structuredContent"]["plan"] == "team"
    rig.crm.data["customers"]["cus_1"]["name"] = "Someone Else's Edit"
    plan = (await rig.gw.admin.post("/v1/rollback", json={"run": "drift", "dry_run": False},
                                    headers=ADMIN)).json()["plan"]
    assert plan["steps"][0]["status"] == "conflict" and "name" in plan["steps"][0]["detail"]
    assert rig.crm.data["customers"]["cus_1"]["plan"] == "team"
    forced = (await rig.gw.admin.post("/v1/rollback", json={"run": "drift", "dry_run": False,
                                                            "force": True},
                                      headers=ADMIN)).json()["plan"]
    assert forced["steps"][0]["status"] == "applied"
    assert rig.crm.data["customers"]["cus_1"]["plan"] == "pro"
    assert rig.crm.data["customers"]["cus_1"]["name"] == "Someone Else's Edit"
