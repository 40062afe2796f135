"""A held call approved while the primary dies, with real processes: two gateways on
a primary and its synchronous standby (``tests.replicated``), the approved call at
the upstream when the primary crashes and the standby is promoted. It is sent
once, whatever is approved after, and ends ``executed`` with the upstream's answer
and its journal entry's outcome: the gateway had the answer in hand, so it keeps it
and saves it once a primary is back (while the claim is still its own), rather than
leaving the call to become ``unknown`` when its claim's lease lapses."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.e2e.test_failover_processes import APPROVER, BOT, pair, patch, run, upstream, writes_go
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
- id: hangs
  match: {methods: [PATCH], path: "/hang/{id}"}
  action: allow
"""

poll = functools.partial(_poll, timeout=60)  # a promotion, or a claim's lease to lapse


@pytest.fixture
def gateways(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    config = write_settings(tmp_path, pair.url(), engage_wait=1.0,
                            # the upstream answers once the primary crashed and (in one
                            # case) the standby was promoted: seconds on a loaded machine
                            upstream_timeout=30,
                            # a claim's lease: 52 s, room for the approve's 5 s wait for
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


@contextlib.contextmanager
def approved_at_the_upstream(proxy: str, admin: str, upstream: Recorder,
                             ) -> Iterator[tuple[str, list[httpx.Response]]]:
    """A held call approved through ``admin`` (in a thread: the approve waits for its
    answer), held at the upstream while the block runs; then answered, and the
    approve's answer is in the list."""
    held = patch(proxy, "/gate/h", BOT)
    assert held.status_code == 202, held.text
    call_id = held.json()["approval"]["id"]
    answers: list[httpx.Response] = []
    approving = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{admin}/v1/approvals/{call_id}/approve", json={}, headers=APPROVER, timeout=60)))
    approving.start()
    try:
        poll(upstream.gated.is_set, "the approved call at the upstream")
        yield call_id, answers
    finally:
        upstream.gate.set()
        approving.join(timeout=60)


@pytest.mark.parametrize("promoted", [True, False], ids=["answered-promoted",
                                                           "answered-with-no-primary"])
def test_an_approved_call_at_the_upstream_when_the_primary_dies_is_sent_once(
        pair: Pair, gateways: list[Proc], upstream: Recorder, promoted: bool) -> None:
    """The upstream answers once the standby is promoted, or while there is none (then
    the approve request answers 503, and what the executor saves after the send is
    saved once the standby is promoted, well within the claim's lease)."""
    (proxy_a, admin_a), (proxy_b, admin_b) = (g.urls for g in gateways)
    with approved_at_the_upstream(proxy_a, admin_a, upstream) as (call_id, answers):
        pair.crash_primary()
        if promoted:
            pair.promote()
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


@pytest.fixture
def short_claims(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    """A claim's lease of 11 s (upstream 5 + 2 captures of 1 + 2 heartbeats of 2), so the
    store can stay away past it."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    config = write_settings(tmp_path, pair.url(), engage_wait=1.0, upstream_timeout=5,
                            capture_timeout=1, executor_lease=2)
    started = start_gateways(config, 2)
    yield started
    for proc in started:
        proc.stop()


def test_an_answer_whose_save_outlives_the_claim_is_audited_once(
        pair: Pair, short_claims: list[Proc], upstream: Recorder) -> None:
    """The upstream answers while there is no primary, and none comes back before the
    claim's lease ends, so the executor gives up saving the answer. The call was sent:
    it ends ``unknown`` (the sweeper), its journal entry keeps the answer (the journal's
    own outcome, saved once a primary is back), and one audit record ends it, the
    sweeper's ``approval.unknown``: recovery, in the process itself (the store changed)
    or in the other once the first dies, appends no "recovered" one beside it."""
    (proxy_a, admin_a), (proxy_b, admin_b) = (g.urls for g in short_claims)
    with approved_at_the_upstream(proxy_a, admin_a, upstream) as (call_id, answers):
        pair.crash_primary()  # quickly: the upstream answers within its timeout
    assert [a.status_code for a in answers] == [503], answers
    row = run(pair, pair.standby_port, "gateway",  # the claim is on the synchronous standby
              f"SELECT lease_until FROM approvals WHERE id = '{call_id}'")
    lease_until = datetime.fromisoformat(str(row[0]["lease_until"]).replace("Z", "+00:00"))
    # the executor stops retrying before the lease ends; a try under way then fails too
    poll(lambda: datetime.now(UTC) > lease_until + timedelta(seconds=1), "the lease's end")
    pair.promote()
    for n, proxy in enumerate((proxy_a, proxy_b)):
        poll(lambda p=proxy, n=n: writes_go(p, f"after-{n}"), f"writes through {proxy}",
             interval=0.1)
    settled = poll(lambda: (c := held_call(admin_b, call_id))["status"] != "approved" and c,
                   "the call settled")
    assert settled["status"] == "unknown", settled
    assert upstream.count("PATCH", "/gate/") == 1
    entry = poll(lambda: [e for e in journal(admin_b) if e["path"] == "/gate/h"
                          and e["status"] is not None] or None, "the outcome journaled")
    assert [(e["state"], e["status"]) for e in entry] == [("completed", 200)], entry
    entry_id = entry[0]["id"]

    # a canary: process A dies with a write at the upstream; B recovers what A left, the
    # canary's record and any other of A's entries no record accounts for, all at once
    sending = threading.Thread(target=unanswered, args=(proxy_a, "/hang/c"), daemon=True)
    sending.start()
    poll(upstream.hanging.is_set, "the canary at the upstream")
    short_claims[0].proc.kill()
    canary = poll(lambda: [e for e in journal(admin_b) if e["path"] == "/hang/c"
                           and e["state"] == "unknown"] or None, "A's canary recovered")
    poll(lambda: audit_naming(pair, canary[0]["id"]), "the canary's recovered record")
    naming = audit_naming(pair, entry_id)
    ends = [r for r in audit_naming(pair, call_id)
            if r["action"] in ("approval.executed", "approval.failed", "approval.unknown")]
    assert naming == [], json.dumps(naming)  # no "recovered" record beside the approval's
    assert [r["action"] for r in ends] == ["approval.unknown"], json.dumps(ends)


def unanswered(proxy: str, path: str) -> None:
    """A write whose gateway dies under it."""
    with contextlib.suppress(httpx.HTTPError):
        patch(proxy, path, BOT)


def audit_naming(pair: Pair, term: str) -> list[dict]:  # type: ignore[type-arg]
    rows = run(pair, pair.standby_port, "gateway", "SELECT action, detail FROM audit WHERE "
               f"detail LIKE '%\"{term}\"%' ORDER BY seq")
    return [{"action": r["action"], "detail": json.loads(r["detail"])} for r in rows]
