"""The dashboard's shadow-run and autonomy views in a real browser: a shadow run's proposed
changes with their diffs, one promoted to a held call and approved, and the report panel."""

from __future__ import annotations

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
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("autonomy"), RULES, extra="mode: shadow\n") \
            as running:
        yield running


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    with watched_tab(browser, stack.admin + "/") as tab:
        yield tab


def test_promote_a_shadowed_write_approve_it_and_read_the_report(page: Any, stack: Stack,
                                                                  tmp_path: Path) -> None:
    from playwright.sync_api import expect
    for customer in ("cus_1", "cus_2"):
        shadowed = httpx.patch(f"{stack.proxy}/crm/customers/{customer}", json={"plan": "free"},
                               headers={**AGENT, "X-Agent-Run": "shadow-run"})
        assert shadowed.status_code == 200 and shadowed.headers["x-gateway-decision"] == "shadow"
    assert stack.customer("cus_1")["plan"] == "pro"
    sign_in(page, "approver")

    page.get_by_role("button", name="Shadow runs").click()
    page.get_by_label("Shadow run name").fill("shadow-run")
    page.get_by_role("button", name="Show proposed changes").click()
    items = page.locator("#shadow-list .change")
    expect(items).to_have_count(2)
    first = items.filter(has_text="/customers/cus_1")
    expect(first).to_contain_text("would allow by edit-customer")
    expect(first.locator('tr[data-field="plan"] .before')).to_have_text('"pro"')
    expect(first.locator('tr[data-field="plan"] .after')).to_have_text('"free"')
    first.get_by_role("checkbox").check()
    page.get_by_role("button", name="Turn 1 selected into held calls").click()
    expect(messages(page)).to_contain_text("1 held call(s) created")
    expect(first.locator("[data-proposal]")).to_have_text("promoted: pending")
    expect(items.filter(has_text="/customers/cus_2").locator("[data-proposal]")).to_have_text(
        "proposed")
    page.screenshot(path=str(tmp_path / "shadow-run.png"), full_page=True)

    page.get_by_role("button", name="Overview").click()
    row = page.locator("#approvals-table tbody tr", has_text="/customers/cus_1")
    row.get_by_role("button", name="Review").click()
    expect(page.locator("#detail")).to_contain_text("a shadowed write, promoted")
    page.locator("#detail").get_by_role("button", name="Approve").click()
    expect(page.locator("#detail-status")).to_have_text("executed")
    assert stack.customer("cus_1")["plan"] == "free"
    assert stack.customer("cus_2")["plan"] == "enterprise"  # proposed only: never sent

    page.get_by_role("button", name="Autonomy").click()
    page.get_by_role("button", name="Show report").click()
    report = page.locator('#autonomy-table tr[data-rule="edit-customer"]')
    expect(report).to_contain_text("shadow 2")
    expect(report).to_contain_text("would allow 2")
    expect(report).to_contain_text("1 / 0 / 0")  # the promoted one, approved
    expect(page.locator("#autonomy-drill")).to_contain_text("No drill recorded")
    expect(page.locator("#autonomy-suggestions")).to_contain_text("None")
    page.screenshot(path=str(tmp_path / "autonomy.png"), full_page=True)
