"""Earned autonomy with real processes: ``gateway serve``, the demo CRM, ``gateway report``
and ``gateway drill --record`` as operators run them.

The report's numbers are checked against a history scripted through the gateway
(agents' calls, operators' decisions, a freeze, a rollback), not rows written
by hand; a delayed call survives a restart of the gateway and runs once.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.model import iso, parse_iso
from tests.e2e.procs import GATEWAY, Proc, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, OTHER_KEY, TOKENS, policy_text

BOT, OTHER = {"X-Gateway-Key": AGENT_KEY}, {"X-Gateway-Key": OTHER_KEY}
RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
- id: big-deal
  match: {methods: [POST], path: "/deals", when: "request.body.amount > 10000"}
  action: hold
- id: odd-deal
  match: {methods: [POST], path: "/deals", when: "request.body.amount == 7"}
  action: hold
  approval: {expires: 0.5}
- id: deals
  match: {methods: [POST], path: "/deals"}
  action: allow
- id: no-deal-deletes
  match: {methods: [DELETE], path: "/deals/{id}"}
  action: deny
  mode: observe
- id: delete-later
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: delay
  delay: {seconds: DELAY}
"""


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def crm():
    proc = start_crm()
    yield proc
    proc.stop()


def configure(tmp_path: Path, store_url: str, crm: Proc, delay: float) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "crm.yaml").write_text(
        policy_text(crm.urls[0], RULES.replace("DELAY", str(delay))))
    return write_settings(tmp_path, store_url)


def requests_to(crm: Proc, method: str) -> list[str]:
    log = httpx.get(f"{crm.urls[0]}/_demo/requests").json()["items"]
    return [c["path"] for c in log if c["method"] == method]


def until(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)  # polling another process, bounded by the deadline
    raise AssertionError(f"timed out waiting for {what}")


def status_of(proxy: str, approval: dict[str, Any], headers: dict[str, str] = BOT) -> str:
    return httpx.get(f"{proxy}{approval['status_url']}", headers=headers).json()["status"]


def held(proxy: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = httpx.request(method, f"{proxy}/crm{path}", json=body, headers=BOT, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["approval"]


def report_cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, "report", "--admin-url", admin, *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GATEWAY_TOKEN": TOKENS["viewer"]})


def test_the_report_matches_a_scripted_history(tmp_path: Path, store_url: str,
                                               crm: Proc) -> None:
    gateway = start_gateway(configure(tmp_path, store_url, crm, delay=0.3))
    try:
        proxy, admin = gateway.urls
        since = iso(datetime.now(UTC) - timedelta(minutes=1))
        edits = [httpx.patch(f"{proxy}/crm/customers/{c}", json=body, headers=BOT)
                 for c, body in (("cus_1", {"plan": "enterprise"}), ("cus_2", {"plan": "free"}),
                                 ("cus_3", {"name": "A. Turing"}))]
        assert [r.status_code for r in edits] == [200, 200, 200]
        assert httpx.put(f"{proxy}/crm/customers/cus_1", json={}, headers=BOT).status_code == 403
        big = [held(proxy, "POST", "/deals", {"title": f"Big {i}", "amount": 50000})
               for i in range(4)]
        for approval, verdict in zip(big[:3], ("approve", "approve", "reject")):
            decided = httpx.post(f"{admin}/v1/approvals/{approval['id']}/{verdict}", json={},
                                 headers=role("approver"), timeout=30)
            assert decided.status_code == 200, decided.text
        odd = held(proxy, "POST", "/deals", {"title": "Odd", "amount": 7})
        until(lambda: status_of(proxy, odd) == "expired", "the odd deal to expire")
        assert [httpx.post(f"{proxy}/crm/deals", json={"title": "S", "amount": 5},
                           headers=BOT).status_code for _ in range(2)] == [201, 201]
        observed = httpx.delete(f"{proxy}/crm/deals/deal_1", headers=BOT)
        assert observed.status_code == 204 and observed.headers["x-gateway-decision"] == "allow"
        cancelled = held(proxy, "DELETE", "/customers/cus_3")
        assert httpx.post(f"{admin}/v1/approvals/{cancelled['id']}/reject", json={},
                          headers=role("approver")).status_code == 200
        ran = held(proxy, "DELETE", "/customers/cus_2")
        until(lambda: status_of(proxy, ran) == "executed", "the delayed delete to run")
        assert httpx.post(f"{admin}/v1/killswitch/engage", json={"reason": "t", "agent": "other"},
                          headers=role("approver")).status_code == 200
        assert httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "pro"},
                           headers=OTHER).status_code == 423
        assert httpx.post(f"{admin}/v1/killswitch/release", json={"reason": "t", "agent": "other"},
                          headers=role("admin")).status_code == 200
        assert httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "pro"},
                           headers=OTHER).status_code == 200
        undone = httpx.post(f"{admin}/v1/rollback", json={
            "entries": [_entry_of(admin, "cus_3")],
            "dry_run": False}, headers=role("admin"), timeout=30).json()["plan"]
        assert [s["status"] for s in undone["steps"]] == ["applied"]
        assert requests_to(crm, "DELETE") == ["/deals/deal_1", "/customers/cus_2"]

        until_now = iso(datetime.now(UTC))
        report = httpx.get(f"{admin}/v1/report/autonomy", params={"since": since,
                                                                   "until": until_now},
                           headers=role("viewer")).json()
        rows = {(r["rule"], r["agent"]): r for r in report["rows"]}
        calls = {key: {d: n for d, n in r["calls"].items() if n and d != "total"}
                 for key, r in rows.items()}
        assert calls == {
            ("edit-customer", "bot"): {"allow": 3},
            (None, "bot"): {"deny": 1},
            ("big-deal", "bot"): {"hold": 4},
            ("odd-deal", "bot"): {"hold": 1},
            ("deals", "bot"): {"allow": 2},
            ("no-deal-deletes", "bot"): {"allow": 1},
            ("delete-later", "bot"): {"delay": 2},
            ("edit-customer", "other"): {"frozen": 1, "allow": 1},
        }
        assert rows[("no-deal-deletes", "bot")]["would_decide"] == {"deny": 1}
        assert rows[("no-deal-deletes", "bot")]["mode"] == "observe"
        big_row = rows[("big-deal", "bot")]
        assert big_row["held"] == {"approved": 2, "rejected": 1, "expired": 0, "pending": 1}
        assert big_row["decided"] == 3 and big_row["override_rate"] == round(1 / 3, 4)
        decided_calls = [httpx.get(f"{admin}/v1/approvals/{a['id']}", headers=role("viewer"))
                         .json() for a in big[:3]]
        waits = [(parse_iso(c["decided_at"]) - parse_iso(c["at"])).total_seconds()
                 for c in decided_calls]
        assert big_row["median_seconds_to_decide"] == round(statistics.median(waits), 3)
        assert rows[("odd-deal", "bot")]["held"]["expired"] == 1
        assert rows[("odd-deal", "bot")]["override_rate"] is None  # nothing was decided
        later = rows[("delete-later", "bot")]
        assert (later["delayed"]["ran"], later["delayed"]["cancelled"], later["override_rate"]) \
            == (1, 1, 0.5)
        assert later["median_seconds_to_decide"] is None  # the clock is not an operator
        assert rows[("edit-customer", "bot")]["rolled_back"] == 1
        assert rows[("edit-customer", "other")]["rolled_back"] == 0
        assert report["drill"] is None and report["suggestions"] == []

        cli = report_cli(admin, "--json", "--since", since, "--until", until_now)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["rows"] == report["rows"]
        table = report_cli(admin, "--since", since, "--until", until_now)
        assert table.returncode == 0, table.stderr
        [line] = [ln for ln in table.stdout.splitlines() if " big-deal " in ln]
        assert "hold 4" in line and "2 approved, 1 rejected, 0 expired, 1 pending" in line
        assert "33.3%" in line
        assert "last drill: none recorded" in table.stdout
    finally:
        gateway.stop()


def _entry_of(admin: str, customer: str) -> str:
    items = httpx.get(f"{admin}/v1/journal", params={"path": f"/customers/{customer}",
                                                     "method": "PATCH"},
                      headers=role("viewer")).json()["items"]
    [entry] = [i for i in items if i["agent"] == "bot"]
    return str(entry["id"])


def test_a_delayed_call_survives_a_restart_and_runs_once(tmp_path: Path, store_url: str,
                                                         crm: Proc) -> None:
    config = configure(tmp_path, store_url, crm, delay=1.0)
    gateway = start_gateway(config)
    proxy = gateway.urls[0]
    approval = held(proxy, "DELETE", "/customers/cus_1")
    assert gateway.stop() == 0
    assert requests_to(crm, "DELETE") == []  # not before its time, not at shutdown
    gateway = start_gateway(config)
    try:
        proxy = gateway.urls[0]
        until(lambda: status_of(proxy, approval) == "executed", "the delayed call to run")
        assert requests_to(crm, "DELETE") == ["/customers/cus_1"]
        answer = httpx.get(f"{proxy}{approval['status_url']}", headers=BOT).json()
        assert answer["response"]["status"] == 204
        other = httpx.get(f"{proxy}{approval['status_url']}", headers=OTHER)
        assert other.status_code == 404  # another agent does not see it
    finally:
        gateway.stop()
    gateway = start_gateway(config)  # and a later start does not send it again
    try:
        assert status_of(gateway.urls[0], approval) == "executed"
        assert requests_to(crm, "DELETE") == ["/customers/cus_1"]
    finally:
        gateway.stop()


def test_a_recorded_drill_backs_the_suggestion_to_relax_a_hold(tmp_path: Path,
                                                               crm: Proc) -> None:
    gateway = start_gateway(configure(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", crm,
                                      delay=60))
    try:
        proxy, admin = gateway.urls
        for i in range(20):
            approval = held(proxy, "POST", "/deals", {"title": f"Big {i}", "amount": 20000})
            assert httpx.post(f"{admin}/v1/approvals/{approval['id']}/approve", json={},
                              headers=role("approver"), timeout=30).status_code == 200
        drill = subprocess.run(
            [*GATEWAY, "drill", "--writes", "10", "--record", "--admin-url", admin,
             "--out", str(tmp_path / "drills")], capture_output=True, text=True, timeout=120,
            env={**os.environ, "GATEWAY_TOKEN": TOKENS["approver"]})
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert "recorded at" in drill.stdout
        [saved] = list((tmp_path / "drills").glob("drill-*.json"))
        timings = json.loads(saved.read_text())["timings_ms"]
        report = httpx.get(f"{admin}/v1/report/autonomy", params={
            "since": iso(datetime.now(UTC) - timedelta(hours=1))}, headers=role("viewer")).json()
        recorded = report["drill"]
        assert recorded["verdict"] == "PASS" and recorded["recorded_by"] == "approver"
        assert [recorded[f"{p}_ms"] for p in ("detect", "stop", "restore")] == [
            timings["detect"], timings["stop"], timings["restore"]]
        expected = ("rule big-deal: 20 held, 0 rejected in 1 hour: consider allow with a "
                    f"tripwire (last drill PASS: detect {timings['detect']:.0f} ms, stop "
                    f"{timings['stop']:.0f} ms, restore {timings['restore']:.0f} ms)")
        assert [s["text"] for s in report["suggestions"]] == [expected]
        audit = httpx.get(f"{admin}/v1/audit", headers=role("viewer")).json()["items"]
        assert [a["action"] for a in audit].count("drill.report") == 1
        assert httpx.post(f"{admin}/v1/drills", json={"verdict": "maybe"},
                          headers=role("approver")).status_code == 400
        assert httpx.post(f"{admin}/v1/drills", json=json.loads(saved.read_text()),
                          headers=role("viewer")).status_code == 403
    finally:
        gateway.stop()
