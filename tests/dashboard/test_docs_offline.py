"""Issue 10: ``/docs`` was blank offline (Swagger UI from a CDN). Now every byte of it comes
from the admin listener, under a CSP that forbids anything else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.stack import Stack, running_stack, watched_tab

RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("docs"), RULES) as running:
        yield running


def test_docs_render_from_the_admin_listener_alone(browser: Any, stack: Stack,
                                                   tmp_path: Path) -> None:
    from playwright.sync_api import expect
    page_headers = httpx.get(stack.admin + "/docs").headers
    csp = page_headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "default-src 'none'" in csp
    assert httpx.get(stack.admin + "/redoc").status_code == 404  # it, too, came from a CDN

    requested: list[str] = []
    with watched_tab(browser, "about:blank") as page:
        page.on("request", lambda request: requested.append(request.url))
        page.goto(stack.admin + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "Agent gateway admin API")
        expect(page.locator(".opblock-summary-path", has_text="/v1/killswitch/engage")
               ).to_be_visible()
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    assert requested and all(url.startswith(stack.admin + "/") for url in requested), requested
