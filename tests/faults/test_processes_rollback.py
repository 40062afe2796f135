"""Issue 16 items 1 and 4: a rollback plan interrupted by a crash is resumed by exactly
one process, and its interrupted step re-reads the resource and re-checks drift first.

Real ``gateway serve`` processes on SQLite and PostgreSQL, a real upstream
(``procs_upstream``) that holds the compensation unanswered until the gateway is
SIGKILLed while it waits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.faults.procs_support import Gateway, configure, in_thread
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import poll

RUN = {"X-Agent-Run": "r1"}


def _interrupted_rollback(tmp_path: Path, store_url: str, **settings: Any,
                          ) -> tuple[FaultUpstream, Path, str]:
    """An agent's PATCH, then a rollback whose compensating PUT the upstream receives but
    never answers, and the gateway applying it SIGKILLed meanwhile."""
    upstream = FaultUpstream({"/items/a": {"name": "a", "v": 1}})
    config = configure(tmp_path, store_url, upstream.url, executor_lease=1.5, **settings)
    gateway = Gateway(config)
    try:
        assert gateway.call("PATCH", "/items/a", json={"v": 2}, headers=RUN).status_code == 200
        upstream.hang("PUT", "/items/a")  # received, not applied, never answered
        in_thread(gateway.api, "POST", "/v1/rollback", json={"run": "r1", "dry_run": False})
        upstream.wait_for("PUT", "/items/a")
        [plan] = poll(lambda: gateway.api("GET", "/v1/rollback").json()["items"], "the plan")
    finally:
        gateway.kill()
    upstream.release()  # the held PUT is dropped unapplied (its connection is gone anyway)
    assert plan["status"] == "running"
    assert upstream.resources["/items/a"]["v"] == 2
    return upstream, config, plan["id"]


def _plan(gateway: Gateway, plan_id: str) -> dict[str, Any]:
    return gateway.api("GET", f"/v1/rollback/{plan_id}").json()["plan"]


def test_a_plan_left_by_a_killed_process_is_resumed_by_one_of_two_workers(
        tmp_path: Path, store_url: str) -> None:
    upstream, config, plan_id = _interrupted_rollback(tmp_path, store_url)
    try:
        before = len(upstream.received("PUT"))
        resumed = upstream.gate("PUT", "/items/a")  # both would read before either writes
        workers = Gateway(config, "--workers", "2")
        try:
            upstream.wait_for("PUT", "/items/a", before + 1)
            # a second executor would send its PUT now (it read the same unrestored state);
            # three rounds of every worker's recovery loop (each executor_lease / 3) pass
            late = poll_quiet(lambda: len(upstream.received("PUT")) > before + 1, 1.5)
            resumed.released.set()
            plan = poll(lambda: (p := _plan(workers, plan_id))["status"] != "running" and p,
                        "the resumed plan to finish")
            assert not late, upstream.log
            assert plan["status"] == "done", plan
            assert len(upstream.received("PUT")) == before + 1, upstream.log
            assert upstream.resources["/items/a"]["v"] == 1
            resumes = [r for r in workers.audit() if r["action"] == "rollback.resume"]
            assert len(resumes) == 1, resumes
        finally:
            workers.stop()
    finally:
        upstream.close()


def test_resuming_a_plan_another_process_is_applying_is_409(tmp_path: Path,
                                                            store_url: str) -> None:
    # The resumed PUT is held while the second process starts and both are asked to
    # resume: at load 7 on two cores that outlasted the default upstream_timeout (30 s),
    # the step timed out and the plan had ended before the test asked.
    upstream, config, plan_id = _interrupted_rollback(tmp_path, store_url,
                                                      upstream_timeout=120)
    try:
        held = upstream.gate("PUT", "/items/a")
        first, second = Gateway(config), Gateway(config)
        try:
            upstream.wait_for("PUT", "/items/a", 2)  # one of them resumed it: held there
            answers = [g.api("POST", f"/v1/rollback/{plan_id}/resume") for g in (first, second)]
            held.released.set()
            plan = poll(lambda: (p := _plan(first, plan_id))["status"] != "running" and p,
                        "the resumed plan to finish")
            assert [a.status_code for a in answers] == [409, 409], [a.text for a in answers]
            assert {a.json()["error"]["code"] for a in answers} == {"running"}
            assert plan["status"] == "done", plan
            assert len(upstream.received("PUT")) == 2, upstream.log
        finally:
            first.stop()
            second.stop()
    finally:
        upstream.close()


def test_a_resumed_step_rechecks_drift_before_sending(tmp_path: Path, store_url: str) -> None:
    upstream, config, plan_id = _interrupted_rollback(tmp_path, store_url)
    try:
        upstream.resources["/items/a"] = {"name": "a", "v": 3}  # a person's edit meanwhile
        before = len(upstream.received("PUT"))
        gateway = Gateway(config)
        try:
            plan = poll(lambda: (p := _plan(gateway, plan_id))["status"] != "running" and p,
                        "the resumed plan to finish")
        finally:
            gateway.stop()
        [step] = plan["steps"]
        assert step["status"] == "conflict", plan
        assert len(upstream.received("PUT")) == before  # nothing sent over the edit
        assert upstream.resources["/items/a"] == {"name": "a", "v": 3}
    finally:
        upstream.close()


def poll_quiet(predicate: Any, seconds: float) -> bool:
    """Whether ``predicate`` became true within ``seconds`` (a bounded watch for something
    that must not happen; the bound covers several rounds of the loop that would do it)."""
    try:
        poll(predicate, "", seconds)
    except AssertionError:
        return False
    return True
