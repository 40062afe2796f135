"""Issue 16, item 14: ``max_in_flight: N`` in a policy file. Calls to that upstream beyond
N at once get 503 ``upstream_busy`` with ``Retry-After`` and nothing is sent. Before: the
key was refused by the policy schema and calls piled up without limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.procs import run_gateway
from tests.faults.conftest import RULES, Gateway
from tests.faults.upstream import HANG, FaultyUpstream
from tests.harness import policy_text, poll

C1, C2 = "/customers/c1", "/customers/c2"


def test_calls_beyond_max_in_flight_are_refused_unsent(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    upstream.put(C2, {"id": "c2", "plan": "pro"})
    upstream.script("GET", C1, HANG, apply=False)
    gateway = launch(extra="max_in_flight: 1\ntimeout: 3\n")
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(gateway.agent.get(C1)))
    thread.start()
    try:
        poll(lambda: upstream.methods(C1), "the slow call at the upstream")
        assert upstream.methods(C1) == ["GET"]
        for call in (lambda: gateway.agent.get(C2),
                     lambda: gateway.agent.patch(C2, json={"plan": "free"})):
            busy = call()
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "upstream_busy"
            assert int(busy.headers["retry-after"]) >= 1
        assert upstream.methods(C2) == []  # nothing sent: no capture, no write
        assert gateway.journal() == []
    finally:
        thread.join(timeout=30)
    assert slow[0].status_code == 504
    assert gateway.agent.get(C2).status_code == 200  # the slot is free again


def test_policy_check_knows_max_in_flight(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, value in ((good, 4), (bad, 0)):
        folder.mkdir()
        (folder / "crm.yaml").write_text(policy_text(
            "http://127.0.0.1:9", RULES, extra=f"max_in_flight: {value}\n"))
    assert run_gateway("policy", "check", str(good)).returncode == 0
    refused = run_gateway("policy", "check", str(bad))
    assert refused.returncode != 0 and "max_in_flight" in refused.stdout + refused.stderr
