"""Issue 16, item 14: ``max_in_flight: N`` in a policy file. Calls to that upstream beyond
N at once get 503 ``upstream_busy`` with ``Retry-After`` and nothing is sent. Before: the
key was refused by the policy schema and calls piled up without limit."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.procs import run_gateway, start_gateway, write_settings
from tests.e2e.test_workers import await_children, children
from tests.faults.conftest import RULES, Gateway
from tests.faults.upstream import HANG, FaultyUpstream
from tests.harness import policy_text, poll

C1, C2 = "/customers/c1", "/customers/c2"


def test_calls_beyond_max_in_flight_are_refused_unsent(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    upstream.put(C2, {"id": "c2", "plan": "pro"})
    upstream.script("GET", C1, HANG, apply=False)
    gateway = launch(extra="max_in_flight: 1\ntimeout: 3\n")
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(gateway.agent.get(C1)))
    thread.start()
    try:
        poll(lambda: upstream.methods(C1), "the slow call at the upstream")
        assert upstream.methods(C1) == ["GET"]
        for call in (lambda: gateway.agent.get(C2),
                     lambda: gateway.agent.patch(C2, json={"plan": "free"})):
            busy = call()
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "upstream_busy"
            assert int(busy.headers["retry-after"]) >= 1
        assert upstream.methods(C2) == []  # nothing sent: no capture, no write
        assert gateway.journal() == []
    finally:
        thread.join(timeout=30)
    assert slow[0].status_code == 504
    assert gateway.agent.get(C2).status_code == 200  # the slot is free again


def test_policy_check_knows_max_in_flight(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, value in ((good, 4), (bad, 0)):
        folder.mkdir()
        (folder / "crm.yaml").write_text(policy_text(
            "http://127.0.0.1:9", RULES, extra=f"max_in_flight: {value}\n"))
    assert run_gateway("policy", "check", str(good)).returncode == 0
    refused = run_gateway("policy", "check", str(bad))
    assert refused.returncode != 0 and "max_in_flight" in refused.stdout + refused.stderr


def test_the_workers_of_one_gateway_share_max_in_flight(
        tmp_path: Path, store_url: str, upstream: FaultyUpstream) -> None:
    """``--workers 2`` and ``max_in_flight: 2``: two calls reach the upstream, not two
    per worker (the kernel spreads the agents' connections over both). Then every
    worker is killed holding its slots: the master frees them before it starts the
    next ones, so calls go through again."""
    paths = [f"/customers/h{n}" for n in range(8)]
    for path in [*paths, C2]:
        upstream.put(path, {"id": path, "plan": "pro"})
    for path in paths:
        upstream.script("GET", path, HANG, apply=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(
        policy_text(upstream.url, RULES, extra="max_in_flight: 2\ntimeout: 20\n"))
    gateway = Gateway(start_gateway(write_settings(tmp_path, store_url), "--workers", "2"))
    answers: dict[str, int | str] = {}

    def call(path: str) -> None:  # a client of its own: a connection of its own
        with httpx.Client(base_url=str(gateway.agent.base_url), timeout=30,
                          headers=dict(gateway.agent.headers)) as agent:
            try:
                answers[path] = agent.get(path).status_code
            except httpx.TransportError as exc:
                answers[path] = type(exc).__name__
    threads = [threading.Thread(target=call, args=(path,)) for path in paths]
    try:
        for thread in threads:
            thread.start()
        poll(lambda: sum(1 for s in answers.values() if s == 503) == 6,
             "six calls refused busy")
        assert len(upstream.methods()) == 2  # two at the upstream, for both workers
        workers = children(gateway.proc.proc.pid)
        assert len(workers) == 2
        for pid in workers:  # each killed holding whatever slots it held
            os.kill(pid, signal.SIGKILL)
        await_children(gateway.proc.proc.pid, lambda c: len(c) == 2 and not c & workers)
        poll(lambda: _status(gateway, C2) == 200, "a call through again")
    finally:
        for thread in threads:
            thread.join(timeout=30)
        gateway.close()
    assert sorted(map(str, answers.values())).count("503") == 6


def _status(gateway: Gateway, path: str) -> int | None:
    """A read's status; None while no worker takes the connection."""
    try:
        return gateway.agent.get(path).status_code
    except httpx.TransportError:
        return None
