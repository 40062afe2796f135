"""Tripwires through the proxy: each kind trips, freezes (or holds), and says why."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.settings import Settings
from tests.harness import CRM_RULES, OTHER_KEY, Harness, policy_text, serve_app, started_gateway
from tests.prom import Scrape

CREDENTIALS = 'credentials: {header: Authorization, value: "Bearer upstream-secret"}\n'


@asynccontextmanager
async def gateway(tmp_path: Path, base_url: str, policy_tripwires: str = "",
                  rules: str = CRM_RULES, default: str = "deny",
                  **settings: Any) -> AsyncIterator[Harness]:
    text = policy_text(base_url, rules, default=default, extra=CREDENTIALS + policy_tripwires)
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}, **settings) as harness:
        yield harness


async def assert_tripped(gw: Harness, tripwire: str, scope: str = "agent",
                         target: str | None = "bot") -> dict[str, Any]:
    """The freeze is in force with the tripwire as its author, audited and counted."""
    state = (await gw.admin.get("/v1/killswitch", headers=gw.as_role("viewer"))).json()
    [freeze] = state["freezes"]
    assert state["engaged"] is True
    assert (freeze["by"], freeze["scope"], freeze["target"]) == (f"tripwire:{tripwire}", scope,
                                                                 target)
    assert freeze["reason"].startswith(f"tripwire {tripwire}: ")
    audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
    [record] = [a for a in audit if a["action"] == "tripwire.tripped"]
    assert record["actor"] == f"tripwire:{tripwire}"
    assert record["detail"]["tripwire"] == tripwire and record["detail"]["action"] == "freeze"
    engaged = [a for a in audit if a["action"] == "killswitch.engage"]
    assert [a["actor"] for a in engaged] == [f"tripwire:{tripwire}"]
    metrics = Scrape((await gw.admin.get("/metrics")).text)
    assert metrics.value("gateway_tripwires_tripped_total", tripwire=tripwire) == 1
    return freeze


def assert_frozen(response: Any, tripwire: str) -> None:
    assert response.status_code == 423, response.text
    assert response.headers["x-gateway-decision"] == "frozen"
    error = response.json()["error"]
    assert error["code"] == "writes_frozen" and f"tripwire {tripwire}: " in error["message"]


def sent(crm: Any, method: str) -> list[str]:
    return [c["path"] for c in crm[0].log if c["method"] == method]


async def test_writes_tripwire_stops_the_write_over_the_limit_and_freezes_the_agent(
        tmp_path: Path, crm: Any) -> None:
    tripwires = "tripwires:\n  - {id: bulk-updates, kind: writes, limit: 2}\n"
    async with gateway(tmp_path, crm[1], tripwires) as gw:
        for plan in ("a", "b"):
            response = await gw.agent.patch("/crm/customers/cus_1", json={"plan": plan})
            assert response.status_code == 200
        tripping = await gw.agent.patch("/crm/customers/cus_2", json={"plan": "c"})
        assert_frozen(tripping, "bulk-updates")
        assert "3 writes in 60s by agent bot (limit 2)" in tripping.json()["error"]["message"]
        assert tripping.json()["error"]["tripwire"] == "bulk-updates"
        assert_frozen(await gw.agent.post("/crm/customers", json={"name": "x"}), "bulk-updates")
        assert sent(crm, "PATCH") == ["/customers/cus_1"] * 2  # the tripping call was not sent
        assert "/customers/cus_2" not in sent(crm, "GET")  # nor its capture
        assert (await gw.agent.get("/crm/customers/cus_2")).status_code == 200  # reads go on
        other = await gw.agent.patch("/crm/customers/cus_2", json={"plan": "d"},
                                     headers={"X-Gateway-Key": OTHER_KEY})
        assert other.status_code == 200  # an agent freeze: the other agent writes on
        await assert_tripped(gw, "bulk-updates")
        assert len(await gw.journal()) == 3


async def test_deletes_tripwire_with_upstream_scope(tmp_path: Path, crm: Any) -> None:
    tripwires = "tripwires:\n  - {id: few-deletes, kind: deletes, limit: 1, scope: upstream}\n"
    async with gateway(tmp_path, crm[1], tripwires) as gw:
        assert (await gw.agent.patch("/crm/customers/cus_3", json={"plan": "x"})).status_code == 200
        assert (await gw.agent.delete("/crm/customers/cus_1")).status_code == 204
        assert_frozen(await gw.agent.delete("/crm/customers/cus_2"), "few-deletes")
        other = await gw.agent.patch("/crm/customers/cus_3", json={"plan": "y"},
                                     headers={"X-Gateway-Key": OTHER_KEY})
        assert_frozen(other, "few-deletes")  # the whole upstream is frozen
        assert sent(crm, "DELETE") == ["/customers/cus_1"]
        await assert_tripped(gw, "few-deletes", scope="upstream", target="crm")


async def test_sum_tripwire_is_a_budget_on_a_body_field(tmp_path: Path, crm: Any) -> None:
    tripwires = ("tripwires:\n  - {id: deal-budget, kind: sum, field: amount, limit: 5000, "
                 "window: 3600, per: global}\n")
    async with gateway(tmp_path, crm[1], tripwires) as gw:
        for amount in (3000, 2000):
            response = await gw.agent.post("/crm/deals", json={"title": "t", "amount": amount})
            assert response.status_code == 201, response.text
        tripping = await gw.agent.post("/crm/deals", json={"title": "t", "amount": 1},
                                       headers={"X-Gateway-Key": OTHER_KEY})
        assert_frozen(tripping, "deal-budget")
        assert "amount totals 5001 in 3600s in total (limit 5000)" in tripping.text
        await assert_tripped(gw, "deal-budget", scope="global", target=None)
        assert_frozen(await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"}),
                      "deal-budget")


async def test_hours_tripwire_from_the_settings_file_uses_the_clock(tmp_path: Path,
                                                                    crm: Any) -> None:
    office = {"id": "office-hours", "kind": "hours", "upstreams": ["crm"],
              "allowed_hours": {"start": "08:00", "end": "18:00", "days": ["mon-fri"],
                                "timezone": "Europe/Paris"}}
    async with gateway(tmp_path, crm[1], tripwires=[office]) as gw:
        clock = gw.gateway.tripwires
        clock.clock = lambda: datetime(2024, 5, 1, 9, 0, tzinfo=UTC)  # Wed 11:00 in Paris
        assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})).status_code == 200
        clock.clock = lambda: datetime(2024, 5, 4, 9, 0, tzinfo=UTC)  # Saturday
        assert (await gw.agent.get("/crm/customers/cus_1")).status_code == 200
        tripping = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "y"})
        assert_frozen(tripping, "office-hours")
        assert "at Sat 11:00 is outside the allowed hours" in tripping.text
        freeze = await assert_tripped(gw, "office-hours")
        assert freeze["at"].startswith("2024-05-04T09:00:00")  # the freeze is stamped by the clock


class FailingUpstream:
    """A raw ASGI upstream that answers every write with 500 and reads with 200."""

    def __init__(self) -> None:
        self.writes = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        failing = scope["method"] not in ("GET", "HEAD")
        self.writes += failing
        body = json.dumps({"error": "boom"} if failing else {"ok": True}).encode()
        await send({"type": "http.response.start", "status": 500 if failing else 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


ERROR_RATE = ("tripwires:\n  - {id: upstream-errors, kind: error_rate, limit: 0.5, "
              "min_calls: 2, per: upstream}\n")


async def test_error_rate_tripwire_freezes_a_failing_upstream(tmp_path: Path) -> None:
    upstream = FailingUpstream()
    async with serve_app(upstream) as url, \
            gateway(tmp_path, url, ERROR_RATE, rules="[]", default="allow") as gw:
        first = await gw.agent.post("/crm/things", json={})
        assert first.status_code == 500 and first.headers["x-gateway-decision"] == "allow"
        second = await gw.agent.post("/crm/things", json={})
        assert second.status_code == 500  # it was sent; its outcome trips the wire
        assert_frozen(await gw.agent.post("/crm/things", json={}), "upstream-errors")
        assert upstream.writes == 2
        freeze = await assert_tripped(gw, "upstream-errors", scope="upstream", target="crm")
        assert "2 of 2 writes failed (100%) in 60s to upstream crm (limit 50%)" in freeze["reason"]
        assert (await gw.agent.get("/crm/things")).status_code == 200


async def test_error_rate_counts_an_unreachable_upstream(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with gateway(tmp_path, url, ERROR_RATE, rules="[]", default="allow") as gw:
        for _ in range(2):
            response = await gw.agent.put("/crm/things/1", json={}, headers={})
            assert response.status_code == 502  # the capture GET fails first: nothing sent
        assert (await gw.admin.get("/v1/killswitch", headers=gw.as_role("viewer"))
                ).json()["engaged"] is False
        for _ in range(2):
            response = await gw.agent.post("/crm/things", json={})
            assert response.json()["error"]["code"] == "upstream_unreachable"
        assert_frozen(await gw.agent.post("/crm/things", json={}), "upstream-errors")


async def test_hold_action_sends_calls_to_the_approval_queue(tmp_path: Path, crm: Any) -> None:
    tripwires = "tripwires:\n  - {id: bulk, kind: writes, limit: 1, action: hold}\n"
    async with gateway(tmp_path, crm[1], tripwires) as gw:
        assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "a"})).status_code == 200
        held = []
        for plan in ("b", "c"):
            response = await gw.agent.patch("/crm/customers/cus_2", json={"plan": plan})
            assert response.status_code == 202, response.text
            assert response.headers["x-gateway-decision"] == "hold"
            held.append(response.json()["approval"]["id"])
        assert sent(crm, "PATCH") == ["/customers/cus_1"]
        view = (await gw.admin.get(f"/v1/approvals/{held[0]}", headers=gw.as_role("viewer"))).json()
        assert view["rule"] == "tripwire:bulk"
        approved = await gw.admin.post(f"/v1/approvals/{held[0]}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.status_code == 200, approved.text
        assert approved.json()["response"]["status"] == 200  # approval bypasses the tripwire
        assert crm[0].data["customers"]["cus_2"]["plan"] == "b"
        audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
        trips = [a for a in audit if a["action"] == "tripwire.tripped"]
        assert len(trips) == 1 and trips[0]["detail"]["action"] == "hold"  # the second: same hold
        state = (await gw.admin.get("/v1/killswitch", headers=gw.as_role("viewer"))).json()
        assert state["engaged"] is False
        [entry] = await gw.journal(agent="bot", limit=1)
        assert entry["rule"] == "edit-customer"  # capture and undo come from the policy rule
        assert entry["decision"] == "hold"


async def test_policy_reload_brings_new_tripwires(tmp_path: Path, crm: Any) -> None:
    async with gateway(tmp_path, crm[1]) as gw:
        for _ in range(3):
            assert (await gw.agent.post("/crm/customers", json={"name": "x"})).status_code == 201
        text = policy_text(crm[1], CRM_RULES, extra=CREDENTIALS + (
            "tripwires:\n  - {id: creates, kind: writes, limit: 1, methods: [POST]}\n"))
        (gw.policies_dir / "crm.yaml").write_text(text)
        assert (await gw.gateway.reload_policies("test")).ok
        assert (await gw.agent.post("/crm/customers", json={"name": "y"})).status_code == 201
        assert_frozen(await gw.agent.post("/crm/customers", json={"name": "z"}), "creates")


def test_settings_tripwires_are_checked() -> None:
    settings = Settings(tripwires=[{"id": "a", "kind": "deletes", "limit": 5,
                                    "upstreams": ["crm"]}])
    assert settings.tripwires[0].upstreams == ("crm",)
    with pytest.raises(ValidationError, match="duplicate tripwire id 'a'"):
        Settings(tripwires=[{"id": "a", "kind": "deletes", "limit": 5},
                            {"id": "a", "kind": "writes", "limit": 5}])
