"""Issue 10: an incident, from one place. A misbehaving agent run is seen in the runs
view with its changes; the kill switch is engaged; the run is previewed, confirmed and
rolled back with live progress; the journal shows ``rolled_back``, the audit log
records it, writes are released. A screenshot of each step is saved under
``test-output/dashboard-incident/`` (git-ignored); the path is printed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.stack import AGENT, Stack, messages, running_stack, sign_in, watched_tab

RULES = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH, PUT], path: "/customers/{id}"}
  action: allow
- id: create-customers
  match: {methods: [POST], path: "/customers"}
  action: allow
"""
RUN = "run-rogue-7"
SECRET = "sk_live_do_not_show"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "dashboard-incident"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("incident"), RULES,
                       extra="volatile: [updated_at]\n") as running:
        yield running


def agent_writes(stack: Stack, run: str) -> httpx.Response:
    """The runaway agent: downgrades two customers (one with an API key in the body),
    renames a third, creates a junk customer. Returns its last write's response."""
    headers = {**AGENT, "X-Agent-Run": run}
    calls = [("PATCH", "/customers/cus_1", {"plan": "free", "api_key": SECRET}),
             ("PATCH", "/customers/cus_2", {"plan": "free"}),
             ("PUT", "/customers/cus_3", {"name": "DELETED", "plan": "free"}),
             ("POST", "/customers", {"name": "junk"})]
    response = None
    for method, path, body in calls:
        response = httpx.request(method, f"{stack.proxy}/crm{path}", json=body, headers=headers)
        assert response.status_code in (200, 201), response.text
    assert response is not None
    return response


def crm_state(stack: Stack) -> dict[str, dict[str, Any]]:
    items = httpx.get(f"{stack.crm}/customers").json()
    items = items.get("items", items) if isinstance(items, dict) else items
    return {c["id"]: {k: v for k, v in c.items() if k != "updated_at"} for c in items}


def test_an_incident_end_to_end_on_the_dashboard(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the incident: {SHOTS}")
    shot = iter(range(1, 100))

    def screenshot(page: Any, name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{next(shot):02d}-{name}.png"), full_page=True)

    before = crm_state(stack)
    agent_writes(stack, RUN)
    assert crm_state(stack) != before

    with watched_tab(browser, stack.admin + "/") as page:
        sign_in(page, "admin")

        # 1. detect: the run in the runs view, with what it changed
        page.get_by_role("button", name="Runs", exact=True).click()
        row = page.locator(f'#runs-table tr[data-run="{RUN}"]')
        expect(row).to_contain_text("bot")
        expect(row.locator("td").nth(4)).to_have_text("4")  # writes
        expect(row.locator("td").nth(5)).to_have_text("4 of 4")  # reversible
        expect(row.locator("td").nth(8)).to_have_text("crm")
        row.get_by_role("button", name=f"Changes of run {RUN} by bot").click()
        detail = page.locator("#run-detail")
        expect(detail).to_be_focused()
        expect(detail.locator(".change")).to_have_count(4)
        downgrade = detail.locator(".change", has_text="PATCH crm /customers/cus_2")
        expect(downgrade.locator('tr[data-field="plan"] .before')).to_have_text('"enterprise"')
        expect(downgrade.locator('tr[data-field="plan"] .after')).to_have_text('"free"')
        keyed = detail.locator(".change", has_text="PATCH crm /customers/cus_1")
        expect(keyed.locator('tr[data-field="api_key"] .after')).to_have_text('"[REDACTED]"')
        screenshot(page, "runs-view")

        # 2. stop: the kill switch
        page.get_by_role("button", name="Overview").click()
        page.get_by_label("Reason (required)").fill(f"incident: {RUN} downgrading customers")
        page.get_by_role("button", name="Engage kill switch").click()
        expect(page.locator("#ks-state")).to_have_text("WRITES FROZEN")
        frozen = httpx.patch(f"{stack.proxy}/crm/customers/cus_1", json={"plan": "free"},
                             headers={**AGENT, "X-Agent-Run": RUN})
        assert frozen.status_code == 423
        screenshot(page, "kill-switch-engaged")

        # 3. restore: preview the run's rollback, confirm by typing the run, watch it apply
        page.get_by_role("button", name="Runs", exact=True).click()
        row.get_by_role("button", name=f"Roll back run {RUN} by bot").click()
        plan = page.locator("#plan")
        expect(plan.locator("#plan-status")).to_have_text("dry_run")
        expect(plan.locator("#plan-steps tbody tr")).to_have_count(4)
        expect(plan.locator('#plan-steps tr[data-status="planned"]')).to_have_count(4)
        expect(plan.locator("#plan-summary")).to_contain_text("0 conflict(s)")
        plan_id = plan.get_attribute("data-id")
        assert plan_id
        apply = plan.get_by_role("button", name="Apply rollback")
        expect(apply).to_be_disabled()
        page.get_by_label("to confirm").fill("not the run")
        expect(apply).to_be_disabled()
        page.get_by_label("to confirm").fill(RUN)
        expect(apply).to_be_enabled()
        screenshot(page, "rollback-preview")
        with page.expect_request(re.compile(rf"/v1/rollback/{plan_id}$")):  # live progress
            apply.click()
        expect(plan.locator("#plan-status")).to_have_text("done")
        expect(plan.locator('#plan-steps tr[data-status="applied"]')).to_have_count(4)
        expect(page.locator("#rollback-progress")).to_have_attribute("value", "4")
        expect(messages(page)).to_contain_text(f"Rollback plan {plan_id} is done: 4 applied")
        screenshot(page, "rollback-applied")
        assert crm_state(stack) == before  # every customer as it was; the junk one gone

        # 4. the journal shows rolled_back, the entry its plan and its audit records
        page.get_by_role("button", name="Journal", exact=True).click()
        page.get_by_label("Run id").fill(RUN)
        page.get_by_role("button", name="Search journal").click()
        rows = page.locator("#journal-table tbody tr")
        expect(rows).to_have_count(4)
        expect(page.locator('#journal-table tr[data-state="rolled_back"]')).to_have_count(4)
        rows.filter(has_text="/customers/cus_1").get_by_role("button").click()
        entry = page.locator("#entry")
        expect(entry).to_be_focused()
        expect(entry.locator("#entry-state")).to_have_text("rolled_back")
        expect(entry.locator("#entry-facts")).to_contain_text(f"by plan {plan_id}")
        expect(entry.locator("#entry-prior")).to_contain_text('"plan": "pro"')
        expect(entry.locator("#entry-request-body")).to_contain_text('"api_key": "[REDACTED]"')
        expect(entry.locator("#entry-rollbacks")).to_contain_text(plan_id)
        for action in ("call.allow", "rollback.start", "rollback.finish"):
            expect(entry.locator(f'#entry-audit tr[data-action="{action}"]')).to_have_count(1)
        screenshot(page, "journal-entry-rolled-back")

        # 5. the audit log records the freeze and the rollback, and verifies
        page.get_by_role("button", name="Audit log").click()
        page.get_by_role("button", name="Verify the chain").click()
        expect(page.locator("#auditlog-state")).to_have_text("intact")
        audit = page.locator("#audit-table")
        expect(audit.locator('tr[data-action="killswitch.engage"]')).to_have_count(1)
        expect(audit.locator('tr[data-action="rollback.finish"]')).to_contain_text(plan_id)
        screenshot(page, "audit-log")

        # 6. recover: writes are released
        page.get_by_role("button", name="Overview").click()
        page.get_by_label("Reason for a release").fill("run rolled back, agent fixed")
        page.get_by_role("button", name="Release the global freeze").click()
        expect(page.locator("#ks-state")).to_have_text("writes flowing")
        released = httpx.patch(f"{stack.proxy}/crm/customers/cus_1", json={"plan": "pro"},
                               headers=AGENT)
        assert released.status_code == 200
        screenshot(page, "writes-released")
        assert SECRET not in page.content()
    assert len(list(SHOTS.glob("*.png"))) >= 7
