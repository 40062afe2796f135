"""What the browser tests of the operators' pages share: a real gateway in front of the
demo CRM (processes on port 0, SQLite), a watched browser tab, signing in.

No browser download: Chromium must be installed (``apt-get install -y chromium``);
without it these tests are skipped locally and fail under CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import Proc, start_crm, start_gateway, write_settings
from tests.external import missing
from tests.harness import AGENT_KEY, TOKENS, policy_text

AGENT = {"X-Gateway-Key": AGENT_KEY}
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = os.environ.get("GATEWAY_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        missing(f"Chromium not found (looked for {path}); the dashboard tests need a real "
                "browser: run `apt-get install -y chromium` (or set GATEWAY_TEST_CHROMIUM)")
    return path


@dataclass
class Stack:
    crm: str
    proxy: str
    admin: str

    def role(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[name]}"}

    def hold(self, customer: str, body: dict[str, Any], run: str) -> str:
        response = httpx.patch(f"{self.proxy}/crm/customers/{customer}", json=body,
                               headers={**AGENT, "X-Agent-Run": run}, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()["approval"]["id"]

    def customer(self, customer: str) -> dict[str, Any]:
        return httpx.get(f"{self.crm}/customers/{customer}").json()

    def killswitch(self) -> dict[str, Any]:
        return httpx.get(f"{self.admin}/v1/killswitch", headers=self.role("viewer")).json()


@contextmanager
def running_stack(directory: Path, rules: str, extra: str = "") -> Iterator[Stack]:
    """The demo CRM and ``gateway serve`` in front of it with ``rules``."""
    crm = start_crm()
    gateway: Proc | None = None
    try:
        (directory / "policies").mkdir()
        (directory / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], rules,
                                                                     extra=extra))
        config = write_settings(directory, f"sqlite+aiosqlite:///{directory / 'gateway.db'}")
        gateway = start_gateway(config)
        yield Stack(crm.urls[0], *gateway.urls)
    finally:
        if gateway is not None:
            gateway.stop()
        crm.stop()


@contextmanager
def watched_tab(browser: Any, url: str) -> Iterator[Any]:
    """A fresh tab (empty session storage) on ``url``; fails on script or CSP errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # failed fetches (401/403/409/423) are logged by Chromium as "Failed to load resource";
    # those are the API's answers, shown on the page. Anything else is a defect (CSP too).
    tab.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
           if msg.type in ("error", "warning") and "Failed to load resource" not in msg.text
           else None)
    tab.goto(url)
    try:
        yield tab
    finally:
        context.close()
    assert not problems, problems


def sign_in(page: Any, role: str) -> None:
    from playwright.sync_api import expect
    page.get_by_label("Operator token").fill(TOKENS[role])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#audit-state")).to_have_text("intact")


def messages(page: Any) -> Any:
    return page.locator("#messages")
