"""Issue 10: OpenTelemetry tracing, end to end. A real ``gateway serve`` exports its
spans over OTLP/HTTP to a receiver decoding the protobuf; the demo CRM process
records the ``traceparent`` each of its requests carried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.otlp import ReceivedSpan, otlp_receiver
from tests.e2e.procs import Proc, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, CRM_RULES, policy_text

AGENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
AGENT_SPAN = "b7ad6b7169203331"
AGENT_TRACEPARENT = f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"
AGENT = {"X-Gateway-Key": AGENT_KEY, "traceparent": AGENT_TRACEPARENT}


@pytest.fixture
def crm() -> Iterator[Proc]:
    proc = start_crm()
    yield proc
    proc.stop()


def config_for(tmp_path: Path, crm: Proc, **extra: Any) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], CRM_RULES))
    return write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", **extra)


def seen_by_crm(crm: Proc) -> list[dict[str, Any]]:
    return httpx.get(f"{crm.urls[0]}/_demo/requests").json()["items"]


def parent(traceparent: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, flags) == ("00", "01")
    return trace_id, span_id


def test_spans_reach_an_otlp_receiver_and_traceparent_the_upstream(tmp_path: Path,
                                                                   crm: Proc) -> None:
    with otlp_receiver() as (endpoint, receiver):
        gateway = start_gateway(config_for(tmp_path, crm), env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "gateway-under-test"})
        try:
            write = httpx.patch(f"{gateway.urls[0]}/crm/customers/cus_1", json={"plan": "gold"},
                                headers=AGENT)
            assert write.status_code == 200
            request_id = write.headers["x-gateway-request-id"]

            def complete(spans: list[ReceivedSpan]) -> bool:
                return any(s.name == "gateway.call" for s in spans) and \
                    sum(s.name == "gateway.journal" for s in spans) == 2
            spans = receiver.wait_for(complete)
        finally:
            gateway.stop()

    assert set(receiver.paths) == {"/v1/traces"}
    [call] = [s for s in spans if s.name == "gateway.call"]
    assert (call.trace_id, call.parent_span_id) == (AGENT_TRACE, AGENT_SPAN)  # the agent's trace
    assert call.service == "gateway-under-test"
    assert call.attributes["gateway.request_id"] == request_id
    assert (call.attributes["gateway.decision"], call.attributes["http.response.status_code"],
            call.attributes["gateway.agent"], call.attributes["http.request.method"]) == \
        ("allow", 200, "bot", "PATCH")
    children = {s.name: s for s in spans if s.parent_span_id == call.span_id}
    assert sorted(s.name for s in spans if s.parent_span_id == call.span_id) == \
        ["gateway.capture", "gateway.journal", "gateway.journal", "gateway.upstream"]
    assert all(s.trace_id == AGENT_TRACE for s in spans)
    # every step starts within the call; all but the outcome's journal write end in it too
    # (the outcome is journaled after the agent has its answer)
    assert all(call.start_ns <= s.start_ns for s in spans if s.parent_span_id == call.span_id)
    within = [s for s in spans if s.parent_span_id == call.span_id
              and s.attributes.get("gateway.journal.phase") != "outcome"]
    assert sorted(s.name for s in within) == ["gateway.capture", "gateway.journal",
                                              "gateway.upstream"]
    assert all(s.start_ns <= s.end_ns <= call.end_ns for s in within)

    capture, forwarded = seen_by_crm(crm)[-2:]
    assert (capture["method"], forwarded["method"]) == ("GET", "PATCH")
    # each upstream request carries its own step's span as parent, in the agent's trace
    assert parent(capture["headers"]["traceparent"]) == (AGENT_TRACE,
                                                         children["gateway.capture"].span_id)
    assert parent(forwarded["headers"]["traceparent"]) == (AGENT_TRACE,
                                                           children["gateway.upstream"].span_id)


def test_tracing_is_off_by_default(tmp_path: Path, crm: Proc) -> None:
    gateway = start_gateway(config_for(tmp_path, crm))
    try:
        read = httpx.get(f"{gateway.urls[0]}/crm/customers/cus_1", headers=AGENT)
        assert read.status_code == 200
    finally:
        gateway.stop()
    # no span of the gateway's in between: the agent's own context goes through untouched
    assert seen_by_crm(crm)[-1]["headers"]["traceparent"] == AGENT_TRACEPARENT
