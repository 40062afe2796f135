"""Approval guarantees with real processes: threads, two gateways on one PostgreSQL, restarts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, TOKENS, policy_text

AGENT = {"X-Gateway-Key": AGENT_KEY}
RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: hold-deals
  match: {methods: [POST], path: "/deals"}
  action: hold
"""


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def crm():
    proc = start_crm()
    yield proc
    proc.stop()


@pytest.fixture
def config(tmp_path: Path, store_url: str, crm: Proc) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], RULES))
    return write_settings(tmp_path, store_url)


def posts(crm: Proc) -> int:
    log = httpx.get(f"{crm.urls[0]}/_demo/requests").json()["items"]
    return sum(1 for c in log if c["method"] == "POST")


def hold(proxy: str, **headers: str) -> str:
    response = httpx.post(f"{proxy}/crm/deals", json={"name": "D", "amount": 1},
                          headers={**AGENT, **headers}, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["approval"]["id"]


def approve_all(urls: list[str], call_id: str, count: int) -> list[int]:
    barrier = threading.Barrier(count)

    def approve(i: int) -> int:
        barrier.wait()
        return httpx.post(f"{urls[i % len(urls)]}/v1/approvals/{call_id}/approve", json={},
                          headers=role("approver" if i % 2 else "admin"), timeout=60).status_code

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(approve, range(count)))


def test_concurrent_approvals_from_threads_execute_once(config: Path, crm: Proc) -> None:
    gateway = start_gateway(config)
    try:
        proxy, admin = gateway.urls
        call_id = hold(proxy)
        statuses = approve_all([admin], call_id, 16)
        assert statuses.count(200) == 1 and set(statuses) == {200, 409}
        assert posts(crm) == 1
    finally:
        gateway.stop()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # shared by two processes
def test_two_gateways_sharing_postgresql_execute_once(config: Path, crm: Proc) -> None:
    first, second = start_gateway(config), start_gateway(config)
    try:
        call_id = hold(first.urls[0])
        statuses = approve_all([first.urls[1], second.urls[1]], call_id, 16)
        assert statuses.count(200) == 1 and set(statuses) == {200, 409}
        assert posts(crm) == 1

        # an agent waiting on one process hears of an approval taken on the other
        result: dict[str, httpx.Response] = {}
        waiter = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            f"{first.urls[0]}/crm/deals", json={"name": "Waiting", "amount": 2},
            headers={**AGENT, "Prefer": "wait=30"}, timeout=60)))
        waiter.start()
        pending = _pending(second.urls[1])
        approved = httpx.post(f"{second.urls[1]}/v1/approvals/{pending}/approve", json={},
                              headers=role("admin"), timeout=60)
        assert approved.status_code == 200
        waiter.join(timeout=60)
        assert result["r"].status_code == 201 and result["r"].json()["name"] == "Waiting"
        assert posts(crm) == 2
    finally:
        first.stop()
        second.stop()


def _pending(admin: str) -> str:
    for _ in range(3000):  # bounded: until the waiting agent's call is held
        items = httpx.get(f"{admin}/v1/approvals", params={"status": "pending"},
                          headers=role("viewer")).json()["items"]
        if items:
            return items[0]["id"]
    raise AssertionError("no pending approval appeared")


def test_pending_calls_survive_a_restart(config: Path, crm: Proc) -> None:
    gateway = start_gateway(config)
    call_id = hold(gateway.urls[0])
    assert gateway.stop() == 0
    gateway = start_gateway(config)
    try:
        proxy, admin = gateway.urls
        status = httpx.get(f"{proxy}/_gateway/approvals/{call_id}", headers=AGENT).json()
        assert status == {"id": call_id, "status": "pending", "response": None}
        approved = httpx.post(f"{admin}/v1/approvals/{call_id}/approve", json={},
                              headers=role("approver"))
        assert approved.json()["status"] == "executed"
        status = httpx.get(f"{proxy}/_gateway/approvals/{call_id}", headers=AGENT).json()
        assert status["status"] == "executed" and status["response"]["status"] == 201
        assert posts(crm) == 1
    finally:
        gateway.stop()
