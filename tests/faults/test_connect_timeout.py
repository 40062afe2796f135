"""The fault-matrix cell "upstream timeout while connecting": no connection within the
rule's ``timeout``, so not a byte of the write left. The contract: the entry is
``failed`` (nothing can have reached the upstream), rollback skips it, and an approved
call that met it is ``failed`` like one whose connection was refused, never ``unknown``.

The upstream is a real listening socket whose accept queue is full and that never
accepts: the kernel drops the gateway's SYNs, so its connect times out (a refusal would
be the other cell, ``test_wire.py::test_a_refused_connection_is_failed``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import start_gateway, write_settings
from tests.faults.conftest import Gateway
from tests.harness import policy_text

TIMEOUT = "timeout: 1\n"
RULES = """
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
- id: held-create
  match: {methods: [POST], path: "/refunds"}
  action: hold
"""


class Blackhole:
    """A socket that listens (backlog 0) and never accepts, its queue filled: a connect
    to it neither succeeds nor is refused, it times out."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(0)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.fillers: list[socket.socket] = []
        for _ in range(16):  # bounded: the queue holds backlog + 1 on Linux
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(self.server.getsockname())
            except TimeoutError:
                filler.close()
                return  # the queue is full: this connect was dropped
            self.fillers.append(filler)
        raise AssertionError("the accept queue never filled")

    def queued(self) -> int:
        """Connections completed by the kernel (the gateway's would add to them)."""
        return len(self.fillers)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.server.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
def launch(tmp_path: Path, store_url: str,
           blackhole: Blackhole) -> Iterator[Callable[[], Gateway]]:
    started: list[Gateway] = []

    def launch() -> Gateway:
        (tmp_path / "policies").mkdir(exist_ok=True)
        (tmp_path / "policies" / "crm.yaml").write_text(
            policy_text(blackhole.url, RULES, extra=TIMEOUT))
        gateway = Gateway(start_gateway(write_settings(tmp_path, store_url)))
        started.append(gateway)
        return gateway

    yield launch
    for gateway in started:
        gateway.close()


def test_a_write_that_could_not_connect_in_time_is_failed_and_rollback_skips_it(
        launch: Callable[[], Gateway], blackhole: Blackhole) -> None:
    gateway = launch()
    response = gateway.agent.post("/customers", json={"id": "c1"})
    assert response.status_code == 504, response.text
    assert "not sent" in response.json()["error"]["message"]
    [entry] = gateway.journal()
    assert entry["state"] == "failed", entry
    plan = gateway.rollback(entries=[entry["id"]], dry_run=False)
    assert plan["irreversible"] == [], plan
    assert all(s["status"] == "skipped" for s in plan["steps"]), plan
    [entry] = gateway.journal()
    assert entry["state"] == "failed"  # nothing was undone (there was nothing to undo)


def test_an_approved_call_that_could_not_connect_in_time_is_failed_not_unknown(
        launch: Callable[[], Gateway]) -> None:
    gateway = launch()
    held = gateway.agent.post("/refunds", json={"amount": 10})
    assert held.status_code == 202, held.text
    call_id = held.json()["approval"]["id"]
    approved = gateway.admin.post(f"/v1/approvals/{call_id}/approve", json={})
    assert approved.status_code == 504, approved.text
    status = gateway.admin.get(f"/v1/approvals/{call_id}").json()
    assert status["status"] == "failed", status
    assert [e["state"] for e in gateway.journal()] == ["failed"]
