"""The operators' dashboard, driven in a real browser as an operator would use it.

A real ``gateway serve`` process (proxy + admin listener on port 0, SQLite) in
front of the demo CRM process; Debian's Chromium driven by Playwright's sync API.
No browser download: Chromium must be installed (``apt-get install -y chromium``);
without it they are skipped locally and fail under CI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.stack import AGENT, Stack, messages, running_stack, sign_in, watched_tab
from tests.harness import TOKENS

RULES = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: review-customer-edits
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: hold
- id: create-customers
  match: {methods: [POST], path: "/customers"}
  action: allow
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("dashboard"), RULES) as running:
        yield running


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    with watched_tab(browser, stack.admin + "/") as tab:
        yield tab


def test_page_is_served_without_auth_with_security_headers(stack: Stack) -> None:
    response = httpx.get(stack.admin + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self'" in csp and "unsafe" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "innerHTML" not in response.text and "insertAdjacentHTML" not in response.text
    assert httpx.get(stack.admin + "/v1/killswitch").status_code == 401  # the data is not


def test_wrong_token_shows_the_prompt_again(page: Any) -> None:
    from playwright.sync_api import expect
    page.get_by_label("Operator token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(messages(page)).to_contain_text("did not accept this token")
    expect(page.get_by_label("Operator token")).to_be_visible()
    expect(page.get_by_label("Operator token")).to_have_value("")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    # a token that stops working (revoked, or storage tampered with) also returns to the prompt
    sign_in(page, "viewer")
    page.evaluate("sessionStorage.setItem('gateway.operator-token', 'revoked')")
    page.reload()
    expect(page.get_by_label("Operator token")).to_be_visible()
    expect(messages(page)).to_contain_text("did not accept this token")


def test_token_stays_out_of_the_url_and_sign_out_forgets_it(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect
    sign_in(page, "viewer")
    assert TOKENS["viewer"] not in page.url
    assert page.evaluate("sessionStorage.getItem('gateway.operator-token')") == TOKENS["viewer"]
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    page.reload()  # same tab: still signed in
    expect(page.locator("#dashboard")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Operator token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_label("Operator token")).to_be_visible()


def test_viewer_is_told_the_role_is_too_low(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect
    sign_in(page, "viewer")
    page.get_by_label("Reason (required)").fill("viewer tries")
    page.get_by_role("button", name="Engage kill switch").click()
    expect(messages(page)).to_contain_text("role is too low")
    expect(messages(page)).to_contain_text("needs the approver role")
    assert stack.killswitch()["engaged"] is False
    expect(page.locator("#dashboard")).to_be_visible()  # still signed in


def test_approve_a_held_call_after_seeing_its_change(page: Any, stack: Stack,
                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect
    assert stack.customer("cus_1")["plan"] == "pro"
    call_id = stack.hold("cus_1", {"plan": "free"}, run="run-approve")
    sign_in(page, "admin")

    row = page.locator(f'#approvals-table tr[data-id="{call_id}"]')
    expect(row).to_contain_text("bot")
    expect(row).to_contain_text("PATCH")
    expect(row).to_contain_text("crm /customers/cus_1")
    expect(row).to_contain_text("review-customer-edits")
    expect(row).to_contain_text("0 of 1")
    expect(row.locator("td").first).to_have_text(re.compile(r"^\d+(s|m \d+s)$"))

    row.get_by_role("button", name="Review").click()
    detail = page.locator("#detail")
    expect(detail).to_be_focused()
    expect(detail.locator("#detail-status")).to_have_text("pending")
    change = detail.locator('#changes tr[data-field="plan"]')
    expect(change.locator(".before")).to_have_text('"pro"')
    expect(change.locator(".after")).to_have_text('"free"')
    expect(detail.locator("#detail-body")).to_contain_text('"plan": "free"')
    shown = httpx.get(f"{stack.admin}/v1/approvals/{call_id}", headers=stack.role("viewer")).json()
    expect(detail.locator("#detail-digest")).to_have_text(shown["digest"])
    page.screenshot(path=str(tmp_path / "dashboard-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways page
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_label("Comment (optional)").fill("checked with the customer")
    with page.expect_request(re.compile(r"/approve$")) as sent:
        detail.get_by_role("button", name="Approve").click()
    assert sent.value.post_data_json == {"digest": shown["digest"],
                                         "comment": "checked with the customer"}
    expect(detail.locator("#detail-status")).to_have_text("executed")
    expect(messages(page)).to_contain_text("the call is now executed; the upstream answered HTTP 200")
    assert stack.customer("cus_1")["plan"] == "free"

    expect(row).to_have_count(0)  # no longer pending
    page.get_by_label("Show").select_option("executed")
    expect(row.locator("td").nth(6)).to_have_text("executed")
    journal = page.locator("#journal-table tbody tr", has_text="crm /customers/cus_1")
    expect(journal.first).to_contain_text("run-approve")
    expect(journal.first).to_contain_text("200")
    expect(journal.first).to_contain_text("hold (review-customer-edits)")
    expect(journal.first.locator("td").last).to_have_text("yes")


def test_api_text_is_shown_as_text_and_reject(page: Any, stack: Stack) -> None:
    from playwright.sync_api import expect
    payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    call_id = stack.hold("cus_2", {"name": payload}, run="<b>run</b>")
    sign_in(page, "approver")
    page.locator(f'#approvals-table tr[data-id="{call_id}"]').get_by_role("button").click()
    detail = page.locator("#detail")
    expect(detail.locator('#changes tr[data-field="name"] .after')).to_have_text(
        '"' + payload.replace('"', '\\"') + '"')
    expect(detail.locator("#detail-facts")).to_contain_text("<b>run</b>")
    assert page.locator("#detail img, #detail script, #detail b").count() == 0
    assert page.evaluate("window.__pwned") is None

    page.get_by_label("Reason (optional)").fill("not this name")
    detail.get_by_role("button", name="Reject").click()
    expect(detail.locator("#detail-status")).to_have_text("rejected")
    expect(detail.locator("#detail-facts")).to_contain_text("not this name")
    assert stack.customer("cus_2")["name"] == "Grace Hopper"
    # deciding twice: the API's 409 shows in the message area
    again = httpx.post(f"{stack.admin}/v1/approvals/{call_id}/reject", json={},
                       headers=stack.role("approver"))
    assert again.status_code == 409


def test_kill_switch_engage_and_release_from_the_page(page: Any, stack: Stack,
                                                      tmp_path: Path) -> None:
    from playwright.sync_api import expect
    call_id = stack.hold("cus_3", {"plan": "pro"}, run="run-frozen")
    sign_in(page, "admin")
    expect(page.locator("#ks-state")).to_have_text("writes flowing")

    page.get_by_label("Reason (required)").fill("incident 7: runaway agent")
    page.get_by_role("button", name="Engage kill switch").click()
    expect(page.locator("#ks-state")).to_have_text("WRITES FROZEN")
    expect(page.locator('#freezes tr[data-scope="global"]')).to_contain_text("incident 7: runaway agent")
    expect(messages(page)).to_contain_text("Kill switch engaged")
    state = stack.killswitch()
    assert state["engaged"] and state["freezes"][0]["by"] == "admin"
    frozen = httpx.post(f"{stack.proxy}/crm/customers", json={"name": "X"}, headers=AGENT)
    assert frozen.status_code == 423

    # a held call cannot be approved while frozen: the 423 shows, the call stays pending
    page.locator(f'#approvals-table tr[data-id="{call_id}"]').get_by_role("button").click()
    page.locator("#detail").get_by_role("button", name="Approve").click()
    expect(messages(page)).to_contain_text("writes are frozen")
    expect(messages(page)).to_contain_text("HTTP 423")
    expect(page.locator("#detail-status")).to_have_text("pending")
    page.screenshot(path=str(tmp_path / "dashboard-frozen.png"), full_page=True)

    # scoped freezes too; releasing asks for a reason first
    page.get_by_label("Reason (required)").fill("crm maintenance")
    page.get_by_label("Upstream (optional)").fill("crm")
    page.get_by_role("button", name="Engage kill switch").click()
    expect(page.locator('#freezes tr[data-scope="upstream"][data-target="crm"]')).to_be_visible()
    page.get_by_role("button", name="Release the global freeze").click()
    expect(messages(page)).to_contain_text("Give a reason for the release")
    expect(page.get_by_label("Reason for a release")).to_be_focused()
    page.get_by_label("Reason for a release").fill("agent stopped")
    page.get_by_role("button", name="Release the global freeze").click()
    expect(page.locator('#freezes tr[data-scope="global"]')).to_have_count(0)
    page.get_by_label("Reason for a release").fill("maintenance over")
    page.get_by_role("button", name="Release the upstream freeze of crm").click()
    expect(page.locator("#ks-state")).to_have_text("writes flowing")
    assert stack.killswitch() == {"engaged": False, "freezes": []}

    page.locator("#detail").get_by_role("button", name="Approve").click()
    expect(page.locator("#detail-status")).to_have_text("executed")
    assert stack.customer("cus_3")["plan"] == "pro"
