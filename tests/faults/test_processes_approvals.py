"""Issue 16 items 7 and 8: an approval's execution lease covers the upstream's own
``timeout``; a vote whose execution failed before anything was sent is withdrawn.

Real ``gateway serve`` processes on SQLite and PostgreSQL and a real upstream
(``procs_upstream``): its capture GET answers 503 once (nothing sent), or it
holds the approved write unanswered while the test reads the claim's lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.faults.procs_support import RULES, Gateway, configure, in_thread, query
from tests.faults.procs_upstream import FaultUpstream


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream({"/held/x": {"name": "x", "v": 1}})
    yield up
    up.close()


def _hold(gateway: Gateway) -> str:
    held = gateway.call("PATCH", "/held/x", json={"v": 2})
    assert held.status_code == 202, held.text
    return str(held.json()["approval"]["id"])


def test_a_vote_whose_execution_sent_nothing_is_withdrawn(tmp_path: Path, store_url: str,
                                                          upstream: FaultUpstream) -> None:
    gateway = Gateway(configure(tmp_path, store_url, upstream.url))
    try:
        call_id = _hold(gateway)
        upstream.fail("GET", "/held/x", count=1)  # the capture fails: the write is not sent
        first = gateway.api("POST", f"/v1/approvals/{call_id}/approve", "approver", json={})
        assert first.status_code == 502, first.text
        assert upstream.received("PATCH") == []
        view = gateway.api("GET", f"/v1/approvals/{call_id}", "viewer").json()
        assert view["status"] == "pending" and view["approvals"] == [], view
        again = gateway.api("POST", f"/v1/approvals/{call_id}/approve", "approver", json={})
        assert again.status_code == 200, again.text  # not 409 already_voted
        assert again.json()["status"] == "executed"
        assert upstream.received("PATCH") == [{"v": 2}]
        actions = [r["action"] for r in gateway.audit()
                   if r["detail"].get("approval") == call_id]
        assert "approval.vote_withdrawn" in actions, actions
    finally:
        gateway.stop()


def test_the_execution_lease_covers_the_upstream_timeout(tmp_path: Path, store_url: str,
                                                         upstream: FaultUpstream) -> None:
    # capture + upstream timeout + 2 * executor_lease was 32 s here: shorter than the policy's 120 s
    config = configure(tmp_path, store_url, upstream.url, RULES, "timeout: 120\n",
                       upstream_timeout=1, capture_timeout=1)
    gateway = Gateway(config)
    try:
        call_id = _hold(gateway)
        slow = upstream.gate("PATCH", "/held/x")  # the upstream takes its time to answer
        thread, result = in_thread(gateway.api, "POST", f"/v1/approvals/{call_id}/approve",
                                   "approver", json={})
        upstream.wait_for("PATCH", "/held/x")
        [(decided, until)] = query(store_url, "SELECT decided_at, lease_until FROM approvals "
                                   "WHERE id = $1", call_id)
        slow.released.set()
        thread.join(60)
        lease = _instant(until) - _instant(decided)
        assert lease.total_seconds() >= 120, (decided, until)
        assert result[0].status_code == 200, result
    finally:
        gateway.stop()


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
