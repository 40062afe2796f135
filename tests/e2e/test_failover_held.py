"""A held call approved while the primary dies, with real processes: two gateways on
a primary and its synchronous standby (``tests.replicated``), the approved call at
the upstream when the primary crashes and the standby is promoted. It is sent
once, whatever is approved after, and ends ``executed`` with the upstream's answer
and its journal entry's outcome: the gateway had the answer in hand, so it keeps it
and saves it once a primary is back (while the claim is still its own), rather than
leaving the call to become ``unknown`` when its claim's lease lapses."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.e2e.test_failover_processes import APPROVER, BOT, pair, patch, upstream, writes_go
from tests.harness import policy_text
from tests.harness import poll as _poll
from tests.replicated import Pair

__all__ = ["pair", "upstream"]  # fixtures shared with test_failover_processes

RULES = """
- id: items
  match: {methods: [GET, PATCH], path: "/items/{id}"}
  action: allow
- id: gated
  match: {methods: [GET], path: "/gate/{id}"}
  action: allow
- id: held
  match: {methods: [PATCH], path: "/gate/{id}"}
  action: hold
  approval: {wait: 0, expires: 3600}
"""

poll = functools.partial(_poll, timeout=60)  # a promotion, or a claim's lease to lapse


@pytest.fixture
def gateways(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    config = write_settings(tmp_path, pair.url(), engage_wait=1.0, upstream_timeout=5,
                            # a claim's lease: 27 s, room for the approve's 5 s wait for
                            # its save, the promotion and the reconnect before it lapses
                            capture_timeout=1, executor_lease=10)
    started = start_gateways(config, 2)
    yield started
    for proc in started:
        proc.stop()


def held_call(admin: str, call_id: str) -> dict:  # type: ignore[type-arg]
    response = httpx.get(f"{admin}/v1/approvals/{call_id}", headers=APPROVER, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("promoted", [True, False], ids=["answered-promoted",
                                                           "answered-with-no-primary"])
def test_an_approved_call_at_the_upstream_when_the_primary_dies_is_sent_once(
        pair: Pair, gateways: list[Proc], upstream: Recorder, promoted: bool) -> None:
    """The upstream answers once the standby is promoted, or while there is none (then
    the approve request answers 503, and what the executor saves after the send is
    saved once the standby is promoted, well within the claim's lease)."""
    (proxy_a, admin_a), (proxy_b, admin_b) = (g.urls for g in gateways)
    held = patch(proxy_a, "/gate/h", BOT)
    assert held.status_code == 202, held.text
    call_id = held.json()["approval"]["id"]
    answers: list[httpx.Response] = []
    approving = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{admin_a}/v1/approvals/{call_id}/approve", json={}, headers=APPROVER, timeout=60)))
    approving.start()
    try:
        poll(upstream.gated.is_set, "the approved call at the upstream")
        pair.crash_primary()
        if promoted:
            pair.promote()
    finally:
        upstream.gate.set()
        approving.join(timeout=60)
    if not promoted:
        pair.promote()
    assert len(answers) == 1, answers
    answer = answers[0]
    if promoted and answer.status_code == 200:
        assert answer.json()["status"] == "executed", answer.text
    else:  # no primary all the while the approve request waits for its save
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_unavailable", answer.text
        assert "answered 200" in answer.json()["error"]["message"], answer.text

    for n, proxy in enumerate((proxy_a, proxy_b)):
        poll(lambda p=proxy, n=n: writes_go(p, f"after-{n}"), f"writes through {proxy}",
             interval=0.1)
    # approving again, through either process, sends nothing more
    for admin in (admin_b, admin_a):
        again = httpx.post(f"{admin}/v1/approvals/{call_id}/approve", json={},
                           headers=APPROVER, timeout=60)
        assert again.status_code != 500, again.text
    settled = poll(lambda: (c := held_call(admin_b, call_id))["status"] in
                   ("executed", "unknown", "failed") and c, "the call settled")
    assert upstream.count("PATCH", "/gate/") == 1
    assert settled["status"] == "executed", settled
    assert settled["response"]["status"] == 200, settled
    entries = poll(lambda: [e for e in journal(admin_b) if e["path"] == "/gate/h"
                            and e["status"] is not None] or None, "the outcome journaled")
    assert [(e["id"], e["status"]) for e in entries] == [(settled["journal_id"], 200)], entries


def journal(admin: str) -> list[dict]:  # type: ignore[type-arg]
    response = httpx.get(f"{admin}/v1/journal", headers=APPROVER, timeout=30)
    if response.status_code != 200:
        return []
    return response.json()["items"]  # type: ignore[no-any-return]
