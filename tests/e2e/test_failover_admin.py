"""The admin API while a store that fails over has no primary, with a real process:
the primary crashed, its standby up but not promoted yet (``tests.replicated``).
Every view that reads or writes the store answers 503 ``store_unavailable`` with
the cause, never 500, ``/v1/health`` says the store is down, and all answer
again once the standby is promoted."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateway, write_settings
from tests.e2e.recorder import Recorder
from tests.e2e.test_failover_processes import ADMIN, BOT, pair, patch, upstream, writes_go
from tests.harness import policy_text
from tests.harness import poll as _poll
from tests.replicated import Pair

__all__ = ["pair", "upstream"]  # fixtures shared with test_failover_processes

RULES = """
- id: items
  match: {methods: [GET, PATCH], path: "/items/{id}"}
  action: allow
- id: held
  match: {methods: [PATCH], path: "/held/{id}"}
  action: hold
  approval: {wait: 0, expires: 3600}
"""
READS = ["/v1/journal", "/v1/audit", "/v1/audit/verify", "/v1/approvals", "/v1/runs",
         "/v1/killswitch", "/v1/shadow", "/v1/report/autonomy"]

poll = functools.partial(_poll, timeout=60)


@pytest.fixture
def gateway(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[Proc]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    proc = start_gateway(write_settings(tmp_path, pair.url(), engage_wait=1.0))
    yield proc
    proc.stop()


def test_with_no_primary_the_admin_api_answers_503_with_the_cause(
        pair: Pair, gateway: Proc) -> None:
    proxy, admin = gateway.urls
    assert writes_go(proxy, "before")
    held = patch(proxy, "/held/h", BOT)
    assert held.status_code == 202, held.text
    call_id = held.json()["approval"]["id"]
    with httpx.Client(base_url=admin, headers=ADMIN, timeout=30) as client:
        pair.crash_primary()
        answers = {path: client.get(path) for path in READS}
        answers["engage"] = client.post("/v1/killswitch/engage", json={"reason": "r"})
        answers["approve"] = client.post(f"/v1/approvals/{call_id}/approve", json={})
        answers["rollback"] = client.post("/v1/rollback", json={"agent": "bot"})
        health = client.get("/v1/health")
        bad = {path: (r.status_code, r.text[:200]) for path, r in answers.items()
               if r.status_code != 503 or r.json()["error"]["code"] != "store_unavailable"
               or "no primary among the store's hosts" not in r.json()["error"]["message"]}
        assert bad == {}, bad
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "degraded" and health.json()["store"] is False

        pair.promote()
        poll(lambda: client.get("/v1/journal").status_code == 200, "the journal again")
        for path in READS:
            assert client.get(path).status_code == 200, path
        assert poll(lambda: client.get("/v1/health").status_code == 200, "healthy again")
