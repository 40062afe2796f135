"""Issue 16 item 13: while the store is down, admin calls that need it answer 503 with
the cause (not 500), and work again once it is back, without a restart.

A real ``gateway serve`` on a PostgreSQL cluster of the test's own (the shared one
is never stopped), stopped and started under it.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.procs_support import Cluster, Gateway, configure
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
