"""Rule features ``policy init`` writes, through the listener against a real upstream:
``effect: read`` on REST rules, ``approval: {answer: error}``, ``{name+}`` templates,
and S3-shaped XML errors for ``aws_sigv4`` upstreams."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.harness import Harness, policy_text, started_gateway
from tests.proxy.conftest import UPSTREAM_TOKEN

RULES = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: search
  match: {methods: [POST], path: "/customers/search"}
  action: allow
  effect: read
- id: delete-customer
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: hold
  approval: {wait: 0, answer: error}
- id: nested
  match: {methods: [PUT], path: "/files/{path+}"}
  action: allow
  capture: false
  undo: {method: DELETE, path: "/files/{path+}"}
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
"""


@pytest.fixture
async def gw(tmp_path: Path, crm):
    texts = {"crm.yaml": policy_text(crm[1], RULES, extra="credentials: {header: Authorization, "
                                     f'value: "Bearer {UPSTREAM_TOKEN}"}}\n'),
             "store.yaml": policy_text(crm[1], RULES, upstream="store", extra=(
                 "credentials:\n  aws_sigv4: {access_key_id: AK, secret_access_key: SK, "
                 "region: us-east-1, service: s3}\n"))}
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               texts) as harness:
        yield harness


async def test_a_post_that_only_reads_is_neither_journaled_nor_frozen(gw: Harness) -> None:
    response = await gw.agent.post("/crm/customers/search", json={"query": "x"})
    assert response.headers["x-gateway-decision"] == "allow"
    assert await gw.journal() == []
    await gw.engage(upstream="crm")
    again = await gw.agent.post("/crm/customers/search", json={"query": "x"})
    assert again.headers["x-gateway-decision"] == "allow", again.text
    frozen = await gw.agent.post("/crm/customers", json={"name": "New"})
    assert frozen.status_code == 423  # a write still is frozen
    assert await gw.journal() == []


async def test_a_hold_answered_as_an_error_names_the_approval_and_runs_once(
        gw: Harness, crm) -> None:
    before = len(crm[0].data["customers"])
    victim = next(iter(crm[0].data["customers"]))
    response = await gw.agent.delete(f"/crm/customers/{victim}")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "approval_pending" and error["status"] == "pending"
    assert error["status_url"] == f"/_gateway/approvals/{error['approval']}"
    assert error["approval"] in error["message"] and "Do not resend" in error["message"]
    assert len(crm[0].data["customers"]) == before  # not sent
    approved = await gw.admin.post(f"/v1/approvals/{error['approval']}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approved.json()["status"] == "executed", approved.text
    assert len(crm[0].data["customers"]) == before - 1
    status = await gw.agent.get(error["status_url"])
    assert status.json()["status"] == "executed"


async def test_a_final_plus_name_binds_the_rest_of_the_path(gw: Harness) -> None:
    response = await gw.agent.put("/crm/files/a/b/c.txt", json={"x": 1})
    assert response.headers["x-gateway-decision"] == "allow"
    [entry] = await gw.journal()
    assert entry["rule"] == "nested"
    assert (entry["undo"]["method"], entry["undo"]["path"]) == ("DELETE", "/files/a/b/c.txt")
    denied = await gw.agent.put("/crm/files", json={"x": 1})
    assert denied.status_code == 403  # {path+} needs at least one segment


async def test_a_sigv4_upstream_gets_the_gateways_errors_as_s3_xml(gw: Harness) -> None:
    response = await gw.agent.post("/store/deals", content=b"x")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/xml"
    error = ElementTree.fromstring(response.content)
    assert error.tag == "Error"
    assert error.findtext("Code") == "AccessDenied"
    assert "policy_denied" in (error.findtext("Message") or "")
    assert "denied by default" in (error.findtext("Message") or "")
    plain = await gw.agent.post("/crm/deals", content=b"x")
    assert plain.json()["error"]["code"] == "policy_denied"  # other upstreams: JSON


async def test_an_approved_read_effect_call_is_not_journaled(tmp_path: Path, crm) -> None:
    rules = RULES.replace('''- id: search
  match: {methods: [POST], path: "/customers/search"}
  action: allow
  effect: read''', '''- id: search
  match: {methods: [POST], path: "/customers/search"}
  action: hold
  effect: read
  approval: {wait: 0, answer: error}''')
    text = policy_text(crm[1], rules, extra="credentials: {header: Authorization, "
                       f'value: "Bearer {UPSTREAM_TOKEN}"}}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as gw:
        held = await gw.agent.post("/crm/customers/search", json={"query": "x"})
        assert held.status_code == 409
        approval = held.json()["error"]["approval"]
        approved = await gw.admin.post(f"/v1/approvals/{approval}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.json()["status"] == "executed", approved.text
        assert await gw.journal() == []
