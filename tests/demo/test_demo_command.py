"""Issue 10: ``gateway demo`` kept ./gateway.db across runs while its CRM started fresh,
so a second walkthrough showed stale entries and rollback conflicts."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import httpx

from tests.e2e.procs import GATEWAY, READY, Proc, wait_for_line

STORE = re.compile(r"demo store: (\S+) \(new for this run")
CRM = re.compile(r"demo CRM API on (\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo(cwd: Path, *flags: str) -> tuple[Proc, str]:
    proc = subprocess.Popen([*GATEWAY, "demo", "--port", "0", "--admin-port", "0",
                             *flags], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    match, seen = wait_for_line(proc, READY, "stdout")
    return Proc(proc, (match.group(1), match.group(2)), seen), "".join(seen)


def test_each_demo_run_starts_with_a_fresh_store_and_says_where(tmp_path: Path) -> None:
    crm_port = free_port()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "crm.yaml").write_text((Path.cwd() / "policies" / "crm.yaml").read_text()
                                       .replace("127.0.0.1:3000", f"127.0.0.1:{crm_port}"))
    stores = []
    for run in range(2):
        gateway, banner = demo(tmp_path, "--policies", str(policies), "--crm-port",
                               str(crm_port))
        try:
            store = STORE.search(banner)
            assert store is not None, banner
            stores.append(store.group(1))
            token = re.search(r"export GATEWAY_TOKEN=(\S+)", banner).group(1)  # type: ignore[union-attr]
            admin = {"Authorization": f"Bearer {token}"}
            journal = httpx.get(f"{gateway.urls[1]}/v1/journal", headers=admin).json()["items"]
            assert journal == [], f"run {run} saw entries of an earlier run"
            proxy = gateway.urls[0]
            write = httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "enterprise"},
                                headers={"X-Gateway-Key": "demo-agent-key"})
            assert write.status_code == 200, write.text  # journaled in this run's store
        finally:
            gateway.stop()
        assert not Path(stores[-1]).exists()  # removed at exit
    assert stores[0] != stores[1]
    assert not (tmp_path / "gateway.db").exists()  # nothing left in the working directory


def test_a_named_store_is_kept_and_said_to_be(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/kept.db"
    gateway, banner = demo(tmp_path, "--policies", str(Path.cwd() / "policies"),
                           "--crm-port", str(free_port()), "--database-url", url)
    gateway.stop()
    assert f"demo store: {url} (kept across runs" in banner
    assert (tmp_path / "kept.db").exists()
