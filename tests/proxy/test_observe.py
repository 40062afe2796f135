"""Issue 10: /metrics had no latency, no pending-approvals gauge, and
``gateway_journal_entries_total`` stayed 0; there was no access log. Scraped and
parsed here as Prometheus parses it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.observe.access import ACCESS_LOG
from tests.harness import CRM_RULES, Harness, policy_text, started_gateway
from tests.prom import Scrape

CREDENTIAL = 'credentials: {header: Authorization, value: "Bearer upstream-secret"}\n'
HOLD_RULES = CRM_RULES + """
- id: hold-refunds
  match: {methods: [POST], path: "/refunds"}
  action: hold
"""


async def scrape(gw: Harness) -> Scrape:
    response = await gw.admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def test_latency_histograms_counters_and_gauges(gw: Harness) -> None:
    before = await scrape(gw)
    assert before.value("gateway_journal_entries_total") == 0
    assert before.value("gateway_freezes_active") == 0
    assert before.value("gateway_policy_info", revision=gw.gateway.policies.revision) == 1
    assert before.value("gateway_policy_reloads_total", result="ok") == 0

    assert (await gw.agent.get("/crm/customers/cus_1")).status_code == 200
    assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"})).status_code == 200
    assert (await gw.agent.post("/crm/deals", json={"amount": 99999})).status_code == 403
    assert (await gw.agent.get("/nowhere/x")).status_code == 404

    after = await scrape(gw)
    for family, kind in (("gateway_request_duration_seconds", "histogram"),
                         ("gateway_upstream_duration_seconds", "histogram"),
                         ("gateway_capture_duration_seconds", "histogram"),
                         ("gateway_journal_write_duration_seconds", "histogram"),
                         ("gateway_approvals_pending", "gauge"),
                         ("gateway_freezes_active", "gauge"),
                         ("gateway_journal_entries", "counter"),
                         ("gateway_decisions", "counter")):
        assert after.type_of(family) == kind, family
    assert after.value("gateway_decisions_total", upstream="crm", decision="allow") == 2
    assert after.value("gateway_decisions_total", upstream="crm", decision="deny") == 1
    assert after.value("gateway_decisions_total", upstream="_other", decision="deny") == 1
    assert after.value("gateway_request_duration_seconds_count", upstream="crm",
                       decision="allow") == 2
    assert after.value("gateway_request_duration_seconds_bucket", upstream="crm",
                       decision="allow", le="+Inf") == 2
    assert after.value("gateway_request_duration_seconds_sum", upstream="crm",
                       decision="allow") > 0  # type: ignore[operator]
    assert after.value("gateway_upstream_duration_seconds_count", upstream="crm") == 2
    assert after.value("gateway_capture_duration_seconds_count", upstream="crm") == 1
    assert after.value("gateway_journal_write_duration_seconds_count") == 2  # intent, outcome
    assert after.value("gateway_journal_entries_total") == 1


async def test_pending_approvals_and_freezes_are_gauges_of_the_store(
        tmp_path: Path, crm: tuple[object, str]) -> None:
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": policy_text(crm[1], HOLD_RULES, extra=CREDENTIAL)}) as gw:
        for _ in range(2):
            assert (await gw.agent.post("/crm/refunds", json={"amount": 1})).status_code == 202
        assert (await gw.engage(upstream="crm")).status_code == 200
        metrics = await scrape(gw)
        assert metrics.value("gateway_approvals_pending") == 2
        assert metrics.value("gateway_freezes_active") == 1
        assert metrics.value("gateway_freezes_engaged_total") == 1
        assert metrics.value("gateway_decisions_total", upstream="crm", decision="hold") == 2
        reloaded = await gw.admin.post("/v1/policies/reload", headers=gw.as_role("admin"))
        assert reloaded.status_code == 200
        assert (await scrape(gw)).value("gateway_policy_reloads_total", result="ok") == 1


async def test_no_access_log_by_default(gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        assert (await gw.agent.get("/crm/customers/cus_1")).status_code == 200
    assert [r for r in caplog.records if r.name == ACCESS_LOG] == []


async def test_access_log_is_one_json_line_per_call(
        tmp_path: Path, crm: tuple[object, str], caplog: pytest.LogCaptureFixture) -> None:
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": policy_text(crm[1], CRM_RULES, extra=CREDENTIAL)},
                               access_log=True) as gw:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
            read = await gw.agent.get("/crm/customers/cus_1?token=s3cret")
            denied = await gw.agent.delete("/crm/deals/deal_1")
            anonymous = await gw.agent.get("/crm/customers", headers={"X-Gateway-Key": "bad"})
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    logged = [json.loads(line) for line in lines]
    assert [(e["request_id"], e["agent"], e["upstream"], e["method"], e["path"], e["decision"],
             e["status"]) for e in logged] == [
        (read.headers["x-gateway-request-id"], "bot", "crm", "GET", "/crm/customers/cus_1",
         "allow", 200),
        (denied.headers["x-gateway-request-id"], "bot", "crm", "DELETE", "/crm/deals/deal_1",
         "deny", 403),
        (anonymous.headers["x-gateway-request-id"], None, "crm", "GET", "/crm/customers",
         "deny", 401)]
    assert all(isinstance(e["ms"], float) and e["ms"] > 0 for e in logged)
    assert "s3cret" not in "".join(lines)  # the query, where secrets travel, is not logged


def test_histogram_buckets_are_prometheus_le_cumulative() -> None:
    """The counted-in-lists histograms read as prometheus-client's did: a value on a bound
    is in that bound's bucket, buckets are cumulative, +Inf is the count."""
    from gateway.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.001, 0.0011, 31.0):
        metrics.call("crm", "allow", seconds)
    metrics.journal_write(0.002, new_entry=True)
    got = Scrape(metrics.render(0, "r").decode())
    bucket = "gateway_request_duration_seconds_bucket"
    assert got.value(bucket, upstream="crm", decision="allow", le="0.0005") == 0
    assert got.value(bucket, upstream="crm", decision="allow", le="0.001") == 1
    assert got.value(bucket, upstream="crm", decision="allow", le="0.0025") == 2
    assert got.value(bucket, upstream="crm", decision="allow", le="30.0") == 2
    assert got.value(bucket, upstream="crm", decision="allow", le="+Inf") == 3
    assert got.value("gateway_request_duration_seconds_count", upstream="crm",
                     decision="allow") == 3
    assert got.value("gateway_request_duration_seconds_sum", upstream="crm",
                     decision="allow") == pytest.approx(31.0021)
    assert got.value("gateway_decisions_total", upstream="crm", decision="allow") == 3
    assert got.value("gateway_journal_write_duration_seconds_count") == 1
    assert got.value("gateway_journal_entries_total") == 1
    assert got.type_of("gateway_request_duration_seconds") == "histogram"
