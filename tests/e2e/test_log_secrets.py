"""What a running gateway writes to its log, read from the process's own output.

``log_level`` is the gateway's: the libraries it uses log requests and values at their
INFO and DEBUG (httpx names every URL it posts to, a webhook's token in its query
included; the CEL evaluator logs the request it judges, secret-named fields and all;
the MCP client every message it sends). Their lines must not carry secrets to stderr.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import GATEWAY, READY, Proc, start_crm, write_settings
from tests.harness import AGENT_KEY, policy_text, poll

HOOK_TOKEN = "hooktokencanary41"
BODY_SECRET = "bodysecretcanary73"
RULES = """
- id: held-deal
  match: {methods: [PATCH], path: "/deals/{id}", when: "request.body.password != ''"}
  action: hold
  approval: {wait: 0, expires: 3600}
"""


@pytest.fixture
def crm() -> Iterator[Proc]:
    proc = start_crm(token="e2e-upstream-token")
    yield proc
    proc.stop()


@pytest.mark.parametrize("level", ["info", "debug"])
def test_the_log_carries_no_webhook_token_nor_secret_field(tmp_path: Path, crm: Proc,
                                                           level: str) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], RULES))
    (tmp_path / "db").mkdir()
    config = write_settings(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'gateway.db'}", log_level=level,
        approval_webhook={"url": f"{crm.urls[0]}/hook?token={HOOK_TOKEN}", "retries": 0})
    out = tmp_path / "gateway.log"
    with out.open("w") as sink:
        proc = subprocess.Popen([*GATEWAY, "serve", "--config", str(config)], stdout=sink,
                                stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        ready = poll(lambda: READY.search(out.read_text()) or proc.poll() is not None,
                     "the gateway's ready line", timeout=60)
        assert ready is not True, out.read_text()
        held = httpx.patch(f"{ready.group(1)}/crm/deals/deal_1",
                           json={"stage": "won", "password": BODY_SECRET},
                           headers={"X-Gateway-Key": AGENT_KEY})
        assert held.status_code == 202, held.text
        # the demo CRM has no /hook: the delivery fails, and the gateway says so
        poll(lambda: "webhook approval.held for" in out.read_text(), "the failed webhook's warning")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = out.read_text()
    assert HOOK_TOKEN not in text
    assert BODY_SECRET not in text
