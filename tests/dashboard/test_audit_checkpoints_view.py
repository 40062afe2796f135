"""The dashboard's audit card: the newest signed checkpoint and each anchor's state.

A real ``gateway serve`` (SQLite: its key file signs) with a file anchor that
works and a witness nobody answers at; the page must show the checkpoint, the
file anchor's last success and the witness failing, as health reports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.stack import AGENT, sign_in, watched_tab
from tests.e2e.procs import Proc, start_crm, start_gateway, write_settings
from tests.harness import policy_text

RULES = """
- id: all
  match: {path: "/**"}
  action: allow
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    directory = tmp_path_factory.mktemp("audit-view")
    crm = start_crm()
    gateway: Proc | None = None
    try:
        (directory / "policies").mkdir()
        (directory / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], RULES))
        config = write_settings(
            directory, f"sqlite+aiosqlite:///{directory / 'gateway.db'}",
            audit_checkpoint_interval=0.2,
            audit_anchors=[{"kind": "file", "path": str(directory / "notes"), "name": "notes"},
                           {"kind": "witness", "url": "http://127.0.0.1:9", "name": "w-down",
                            "timeout": 1}])
        gateway = start_gateway(config)
        yield gateway.urls[0], gateway.urls[1], directory
    finally:
        if gateway is not None:
            gateway.stop()
        crm.stop()


def test_the_audit_card_shows_the_checkpoint_and_its_anchors(browser: Any,
                                                              stack: tuple[str, str, Path]) -> None:
    from playwright.sync_api import expect
    proxy, admin, directory = stack
    response = httpx.post(f"{proxy}/crm/customers", json={"name": "Ada"}, headers=AGENT)
    assert response.status_code in (200, 201), response.text
    with watched_tab(browser, admin + "/") as page:
        sign_in(page, "viewer")
        expect(page.locator("#audit-checkpoint")).to_contain_text("size 1, signed", timeout=20_000)
        notes = page.locator('#anchors-table tr[data-anchor="notes"]')
        expect(notes).to_contain_text("ok")
        expect(notes).not_to_contain_text("never")
        down = page.locator('#anchors-table tr[data-anchor="w-down"]')
        expect(down).to_contain_text("failing")
        expect(down).to_contain_text("never")
    health = httpx.get(f"{admin}/v1/health").json()
    assert [a["name"] for a in health["anchors"]] == ["notes", "w-down"]
    assert (directory / "notes").read_text().startswith("agent-gateway/audit\n1\n")
