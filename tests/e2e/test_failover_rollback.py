"""A rollback plan applying across a failover, with real processes: two gateways on a
primary and its synchronous standby (``tests.replicated``), a plan of two steps
whose first compensation is at the upstream when the primary crashes and the
standby is promoted. The plan ends (resumed by one process if its applier lost
it), and no compensation is sent twice."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateways, write_settings
from tests.e2e.test_failover_processes import ADMIN, BOT, pair
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import policy_text
from tests.harness import poll as _poll
from tests.replicated import Pair

__all__ = ["pair"]  # the fixture shared with test_failover_processes

poll = functools.partial(_poll, timeout=90)  # a promotion, a lapsed lease, a resume
PRIOR = {"/items/a": {"name": "a", "v": 1}, "/items/b": {"name": "b", "v": 1}}


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    served = FaultUpstream({path: dict(value) for path, value in PRIOR.items()})
    yield served
    served.close()


@pytest.fixture
def gateways(tmp_path: Path, pair: Pair, upstream: FaultUpstream) -> Iterator[list[Proc]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    started = start_gateways(write_settings(tmp_path, pair.url(), engage_wait=1.0,
                                            upstream_timeout=10, executor_lease=3), 2)
    yield started
    for proc in started:
        proc.stop()


def plan_of(admin: str, plan_id: str) -> dict[str, Any]:
    response = httpx.get(f"{admin}/v1/rollback/{plan_id}", headers=ADMIN, timeout=30)
    if response.status_code != 200:
        return {"status": f"http {response.status_code}"}
    return response.json()["plan"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("promoted", [True, False], ids=["answered-promoted",
                                                           "answered-with-no-primary"])
def test_a_plan_applying_when_the_primary_dies_ends_and_sends_each_step_once(
        pair: Pair, gateways: list[Proc], upstream: FaultUpstream, promoted: bool) -> None:
    """The compensation is answered once the standby is promoted, or while there is none
    (then what the applier saves after it fails until the promotion, under way)."""
    (proxy_a, admin_a), (_, admin_b) = (g.urls for g in gateways)
    for path in PRIOR:
        done = httpx.patch(f"{proxy_a}/crm{path}", json={"v": 2}, timeout=30,
                           headers={**BOT, "X-Agent-Run": "r1"})
        assert done.status_code == 200, done.text
    gate = upstream.gate("PUT")
    answers: list[httpx.Response] = []
    applying = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{admin_a}/v1/rollback", json={"run": "r1", "dry_run": False}, headers=ADMIN,
        timeout=90)))
    applying.start()
    try:
        upstream.wait_for("PUT")  # the first compensation at the upstream
        pair.crash_primary()
        if promoted:
            pair.promote()
    finally:
        gate.released.set()
        if not promoted:  # the applier saves the step, or fails to, with none meanwhile
            pair.promote()
        applying.join(timeout=90)
    assert len(answers) == 1 and answers[0].status_code != 500, answers
    [plan_id] = {p["id"] for p in poll(lambda: httpx.get(
        f"{admin_b}/v1/rollback", headers=ADMIN, timeout=30).json()["items"], "the plan")}
    plan = poll(lambda: (p := plan_of(admin_b, plan_id))["status"] not in ("running",)
                and not p["status"].startswith("http") and p, "the plan to end")
    puts = [(m, p) for m, p, _ in upstream.log if m == "PUT"]
    assert sorted(puts) == sorted(set(puts)), upstream.log  # no step sent twice
    assert plan["status"] in ("done", "failed", "partial", "conflict"), plan
    for path, prior in PRIOR.items():
        if ("PUT", path) in puts:
            assert upstream.resources[path]["v"] == prior["v"], upstream.resources
