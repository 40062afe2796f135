"""Issue 16 items 6, 10 and 11: after a crash at any point of a write, a restarted
gateway accounts for it: its entry is not left ``intent`` (a dead process's becomes
``unknown``, prior and undo kept), its audit record exists (appended at recovery from
the committed intent) and the chain verifies; an outcome that fails to save while the
store is down is retried, not dropped.

Real ``gateway serve`` processes (SIGKILL at the named moment, observed at the
upstream), SQLite and PostgreSQL; the store-down case on a PostgreSQL cluster of
the test's own, stopped and started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.procs_support import Cluster, Gateway, configure, in_thread, query
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import poll

PRIOR = {"name": "a", "v": 1}


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream({"/items/a": dict(PRIOR)})
    yield up
    up.close()


def _accounted(gateway: Gateway) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The one agent write, once it is no longer an intent, and the audit records naming it."""
    entry = poll(lambda: [e for e in gateway.journal(method="PATCH")
                          if e["state"] != "intent"], "the write to be settled", 30)[0]
    named = poll(lambda: [r for r in gateway.audit() if r["detail"].get("journal") == entry["id"]],
                 "an audit record naming the write", 30)
    return entry, named


def test_killed_after_the_request_was_sent_the_write_is_unknown_and_audited(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    config = configure(tmp_path, store_url, upstream.url, executor_lease=1)
    gateway = Gateway(config)
    upstream.hang("PATCH", "/items/a", apply=True)  # it lands; no answer ever comes
    in_thread(gateway.call, "PATCH", "/items/a", json={"v": 2})
    upstream.wait_for("PATCH", "/items/a")
    gateway.kill()
    restarted = Gateway(config)
    try:
        entry, named = _accounted(restarted)
        assert entry["state"] == "unknown", entry
        assert entry["prior"] == PRIOR and entry["undo"] is not None, entry  # reconcilable
        assert [r["action"] for r in named] == ["call.allow"], named
        assert named[0]["detail"]["recovered"]
        verified = restarted.api("GET", "/v1/audit/verify", "viewer").json()
        assert verified["ok"], verified
    finally:
        restarted.stop()


def test_killed_once_the_agent_has_its_answer_nothing_is_lost(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    config = configure(tmp_path, store_url, upstream.url, executor_lease=1)
    gateway = Gateway(config)
    answer = gateway.call("PATCH", "/items/a", json={"v": 2})
    gateway.kill()  # the moment the agent has its answer
    assert answer.status_code == 200
    restarted = Gateway(config)
    try:
        entry, named = _accounted(restarted)
        assert entry["state"] in ("completed", "unknown"), entry
        assert entry["prior"] == PRIOR and entry["undo"] is not None, entry
        assert len(named) == 1, named  # the listener's, or the one recovery appended
        assert restarted.api("GET", "/v1/audit/verify", "viewer").json()["ok"]
    finally:
        restarted.stop()


def test_an_outcome_that_fails_to_save_while_the_store_is_down_is_retried(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    cluster = Cluster()
    try:
        config = configure(tmp_path, cluster.url, upstream.url)
        gateway = Gateway(config)
        try:
            answered = upstream.gate("PATCH", "/items/a")
            thread, result = in_thread(gateway.call, "PATCH", "/items/a", json={"v": 2})
            upstream.wait_for("PATCH", "/items/a")  # the intent is committed: it was sent
            cluster.stop()
            answered.released.set()
            thread.join(60)
            assert result[0].status_code == 200, result  # the agent has its answer
            gateway.wait_for(r"could not journal the outcome of \S+ .*retrying")
            cluster.start()
            entry = poll(lambda: [e for e in gateway.journal(method="PATCH")
                                  if e["state"] != "intent"], "the outcome to be saved")[0]
            assert entry["state"] == "completed" and entry["status"] == 200, entry
        finally:
            gateway.stop()
    finally:
        cluster.destroy()


def test_an_outcome_the_store_lost_in_a_crash_does_not_stay_intent(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    config = configure(tmp_path, store_url, upstream.url, executor_lease=1, upstream_timeout=1)
    gateway = Gateway(config)
    try:
        assert gateway.call("PATCH", "/items/a", json={"v": 2}).status_code == 200
        [entry] = poll(lambda: [e for e in gateway.journal(method="PATCH")
                                if e["state"] == "completed"], "the outcome")
        # what a database crash does to an outcome committed without waiting for the disk
        query(store_url, "UPDATE journal SET state = 'intent', status = NULL WHERE id = $1",
              entry["id"])
        [settled] = poll(lambda: [e for e in gateway.journal(method="PATCH")
                                  if e["state"] != "intent"], "the lost outcome to be settled")
        assert settled["state"] == "unknown", settled
        assert settled["prior"] == PRIOR and settled["undo"] is not None, settled
    finally:
        gateway.stop()
