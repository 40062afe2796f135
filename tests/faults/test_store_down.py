"""Issue 16 item 13: while the store is down, admin calls that need it answer 503 with
the cause (not 500), and work again once it is back, without a restart.

A real ``gateway serve`` on a PostgreSQL cluster of the test's own (the shared one
is never stopped), stopped and started under it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from gateway.core.model import iso, utcnow
from tests.faults.procs_support import Cluster, Gateway, configure, in_thread, query
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import poll


def test_admin_calls_answer_503_with_the_cause_while_the_store_is_down(tmp_path: Path) -> None:
    upstream = FaultUpstream({"/held/x": {"name": "x", "v": 1}})
    cluster = Cluster()
    try:
        gateway = Gateway(configure(tmp_path, cluster.url, upstream.url))
        try:
            held = gateway.call("PATCH", "/held/x", json={"v": 2})
            assert held.status_code == 202, held.text
            call_id = held.json()["approval"]["id"]
            cluster.stop()
            answers = [gateway.api("POST", f"/v1/approvals/{call_id}/approve", "approver",
                                   json={}),
                       gateway.api("POST", f"/v1/approvals/{call_id}/reject", "approver",
                                   json={}),
                       gateway.api("GET", "/v1/journal", "viewer")]
            for answer in answers:
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["code"] == "store_unavailable", error
                assert "the store is unavailable: " in error["message"], error
                assert len(error["message"]) > len("the store is unavailable: ") + 5, error
            assert upstream.received("PATCH") == []
            cluster.start()
            approved = poll(lambda: (a := gateway.api(
                "POST", f"/v1/approvals/{call_id}/approve", "approver",
                json={})).status_code != 503 and a, "the store to be back")
            assert approved.status_code == 200, approved.text
            assert upstream.received("PATCH") == [{"v": 2}]
        finally:
            gateway.stop()
    finally:
        cluster.destroy()
        upstream.close()


def test_an_outage_longer_than_the_lease_does_not_make_a_live_process_dead(
        tmp_path: Path) -> None:
    """While the store is down no process can renew its heartbeat, so when it comes back
    every one has lapsed. The first process to get a round in must not take the others
    over: they are alive, their writes still on their way, their audit records queued.
    Here A is paused (SIGSTOP) while the store comes back and B has a round in, so B
    finds A's heartbeat lapsed, as it does whenever B's round comes before A's; A then
    goes on. A's write must end as A saw it, with one audit record and no "recovered" one."""
    upstream = FaultUpstream({"/items/a": {"name": "a", "v": 1}})
    cluster = Cluster()
    try:
        config = configure(tmp_path, cluster.url, upstream.url, executor_lease=3)
        a, b = Gateway(config), Gateway(config)
        try:
            upstream.gate("PATCH", "/items/a")
            thread, answered = in_thread(a.call, "PATCH", "/items/a", json={"v": 2})
            upstream.wait_for("PATCH", "/items/a")  # A's intent is in; the write on its way
            [(owner_a,)] = query(cluster.url, "SELECT process FROM journal")
            [(owner_b, renewed)] = query(
                cluster.url, "SELECT owner, expires_at FROM leases WHERE name LIKE "
                "'process:%' AND owner <> $1", owner_a)
            [(lapses,)] = query(cluster.url, "SELECT max(expires_at) FROM leases WHERE name "
                                "LIKE 'process:%'")
            cluster.stop()
            poll(lambda: iso(utcnow()) > lapses, "both heartbeats to lapse", 60)
            os.kill(a.proc.pid, signal.SIGSTOP)
            try:
                cluster.start()
                for _ in range(2):  # B's second round with the store back: one ended whole
                    renewed = poll(lambda r=renewed: (e := query(
                        cluster.url, "SELECT expires_at FROM leases WHERE name = $1",
                        f"process:{owner_b}")[0][0]) > r and e, "a round of B's", 60)
            finally:
                os.kill(a.proc.pid, signal.SIGCONT)
            upstream.release()
            thread.join(60)
            assert answered and answered[0].status_code == 200, answered
            [entry] = poll(lambda: [e for e in a.journal() if e["state"] == "completed"],
                           "A's outcome", 30)
            mark = query(cluster.url, "SELECT expires_at FROM leases WHERE name = $1",
                         f"process:{owner_b}")[0][0]
            poll(lambda: query(cluster.url, "SELECT expires_at FROM leases WHERE name = $1",
                               f"process:{owner_b}")[0][0] > mark or None,
                 "a round of B's after A's outcome", 60)
            named = [r for r in b.audit() if r["detail"].get("journal") == entry["id"]]
            assert [r["action"] for r in named] == ["call.allow"], named
            assert "recovered" not in named[0]["detail"], named
            assert b.count("stopped with") == 0, "\n".join(b.lines)
        finally:
            a.stop()
            b.stop()
    finally:
        cluster.destroy()
        upstream.close()
