"""``gateway serve --workers N``: one ready line, one set of ports, workers replaced when they die."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.procs import start_gateway, write_settings
from tests.harness import AGENT_KEY, policy_text

RULES = """
- id: all
  match: {path: "/**"}
  action: allow
"""


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux: from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent
                found.add(int(entry.name))
    return found


def await_children(pid: int, check, timeout: float = 30) -> set[int]:
    """Until the master's children satisfy ``check`` (a condition with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = children(pid)
        if check(current):
            return current
        time.sleep(0.05)  # poll interval: another process's children, no event to await
    raise AssertionError(f"children of {pid} never matched: {children(pid)}")


def test_workers_share_the_ports_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "up.yaml").write_text(
        policy_text("http://127.0.0.1:9", RULES, upstream="up"))
    config = write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
    gateway = start_gateway(config, "--workers", "3")
    try:
        assert gateway.output[-1].rstrip().endswith("workers=3")
        master = gateway.proc.pid
        first = await_children(master, lambda c: len(c) == 3)
        proxy, admin = gateway.urls
        assert httpx.get(f"{admin}/v1/health").json()["store"] is True
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        replaced = await_children(master, lambda c: len(c) == 3 and victim not in c)
        assert len(replaced - first) == 1
        # the port never closed: any worker answers on it
        response = httpx.get(f"{proxy}/_gateway/health", headers={"X-Gateway-Key": AGENT_KEY})
        assert response.status_code == 200
    finally:
        assert gateway.stop() == 0
    assert children(master) == set()
