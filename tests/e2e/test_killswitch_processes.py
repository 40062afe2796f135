"""One kill switch for every process on the store, with real processes and a real upstream.

Writer threads hammer one gateway process while another engages and releases,
round after round. After each engage returns the test writes a marker into
the upstream's own arrival log; nothing a freeze covers (no PATCH, no capture
GET) may arrive between that marker and the one written before the release.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateway, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.harness import AGENT_KEY, TOKENS, policy_text

AGENT = {"X-Gateway-Key": AGENT_KEY}
APPROVER = {"Authorization": f"Bearer {TOKENS['approver']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
ENGAGE_WAIT = 1.0
ROUNDS = 15
RULES = """
- id: items
  match: {methods: [GET, PATCH], path: "/items/{id}"}
  action: allow
- id: hang
  match: {methods: [GET, PATCH], path: "/hang/{id}"}
  action: allow
"""
postgres_only = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    with Recorder.serving() as recorder:
        yield recorder


@pytest.fixture
def config(tmp_path: Path, store_url: str, upstream: Recorder) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    return write_settings(tmp_path, store_url, engage_wait=ENGAGE_WAIT, upstream_timeout=60)


@pytest.fixture
def gateways() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


class Writers:
    """Threads that PATCH through one gateway, each path used once, until stopped."""

    def __init__(self, proxy: str, count: int = 6) -> None:
        self.proxy = proxy
        self.statuses: Counter[int] = Counter()
        self.unknown = 0  # 423s for writes cut off on their way (they may have landed)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(i,), daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _write(self, index: int) -> None:
        with httpx.Client(headers=AGENT, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                response = client.patch(f"{self.proxy}/crm/items/w{index}-{n}", json={"n": n})
                with self._changed:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 423 and \
                            response.json()["error"].get("outcome") == "unknown":
                        self.unknown += 1
                    self._changed.notify_all()
                n += 1

    def await_more(self, status: int, timeout: float = 30) -> None:
        """Until every writer could have had at least one more ``status`` answer."""
        with self._changed:
            target = self.statuses[status] + len(self._threads)
            assert self._changed.wait_for(lambda: self.statuses[status] >= target, timeout), \
                f"no {status} answers arrived: {dict(self.statuses)}"

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def engage_release_rounds(writers: Writers, admin: str, upstream: Recorder) -> None:
    with httpx.Client(timeout=30) as client:
        for n in range(ROUNDS):
            writers.await_more(200)  # writes are landing
            engaged = client.post(f"{admin}/v1/killswitch/engage", json={"reason": f"r{n}"},
                                  headers=APPROVER)
            assert engaged.status_code == 200, engaged.text
            upstream.mark(f"engaged {n}")
            cut_off = {w["path"] for w in engaged.json()["in_flight"]}
            writers.await_more(423)  # writes are being refused
            upstream.mark(f"releasing {n}")
            released = client.post(f"{admin}/v1/killswitch/release", json={"reason": "ok"},
                                   headers=ADMIN)
            assert released.status_code == 200 and released.json()["released"] is not None
            late = [a for a in upstream.between(f"engaged {n}", f"releasing {n}")
                    if a.path not in cut_off]
            assert late == [], f"round {n}: arrived after engage returned: {late}"


def check_every_write_accounted_for(writers: Writers, upstream: Recorder) -> None:
    assert set(writers.statuses) <= {200, 423}, writers.statuses
    landed = upstream.count("PATCH", "/items/")
    assert writers.statuses[200] <= landed <= writers.statuses[200] + writers.unknown


@postgres_only
def test_an_engage_on_one_process_stops_the_writes_of_another(
        config: Path, upstream: Recorder, gateways: list[Proc]) -> None:
    gateways += start_gateways(config, 2)
    (writing, _), (_, engaging) = gateways[0].urls, gateways[1].urls
    writers = Writers(writing)
    try:
        engage_release_rounds(writers, engaging, upstream)
    finally:
        writers.stop()
    check_every_write_accounted_for(writers, upstream)


def test_with_workers_an_engage_on_any_worker_stops_them_all(
        config: Path, upstream: Recorder, gateways: list[Proc]) -> None:
    gateways.append(start_gateway(config, "--workers", "2"))
    proxy, admin = gateways[0].urls
    assert "workers=2" in gateways[0].output[-1]
    writers = Writers(proxy)
    try:
        engage_release_rounds(writers, admin, upstream)
    finally:
        writers.stop()
    check_every_write_accounted_for(writers, upstream)


class Hanging:
    """One write to ``/hang/1`` that the upstream never answers, sent from a thread."""

    def __init__(self, proxy: str, upstream: Recorder) -> None:
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._send, args=(proxy,), daemon=True)
        self._thread.start()
        assert upstream.hanging.wait(timeout=30), "the write never reached the upstream"

    def _send(self, proxy: str) -> None:
        self.response = httpx.patch(f"{proxy}/crm/hang/1", json={"plan": "x"}, headers=AGENT,
                                    timeout=60)

    def answer(self) -> httpx.Response:
        self._thread.join(timeout=60)
        assert self.response is not None
        return self.response


def engage_within_engage_wait(admin: str) -> httpx.Response:
    """The contract's bound is the client's timeout: engage_wait plus one second."""
    engaged = httpx.post(f"{admin}/v1/killswitch/engage", json={"reason": "hang"},
                         headers=APPROVER, timeout=ENGAGE_WAIT + 1)
    assert engaged.status_code == 200, engaged.text
    return engaged


def test_a_hanging_write_is_cut_off_and_reported_in_flight(
        config: Path, upstream: Recorder, gateways: list[Proc]) -> None:
    gateways.append(start_gateway(config))
    proxy, admin = gateways[0].urls
    hanging = Hanging(proxy, upstream)
    [write] = engage_within_engage_wait(admin).json()["in_flight"]
    assert (write["method"], write["path"], write["state"]) == ("PATCH", "/hang/1", "unknown")
    answer = hanging.answer()
    assert answer.status_code == 423
    assert answer.json()["error"]["outcome"] == "unknown"
    assert upstream.cut_off.wait(timeout=30)  # the gateway closed the connection
    [entry] = httpx.get(f"{admin}/v1/journal", headers=ADMIN).json()["items"]
    assert (entry["id"], entry["state"]) == (write["id"], "unknown")


@postgres_only
def test_another_process_cuts_off_its_hanging_write_and_says_so(
        config: Path, upstream: Recorder, gateways: list[Proc]) -> None:
    gateways += start_gateways(config, 2)
    (writing, _), (_, engaging) = gateways[0].urls, gateways[1].urls
    hanging = Hanging(writing, upstream)
    [write] = engage_within_engage_wait(engaging).json()["in_flight"]
    assert (write["path"], write["state"]) == ("/hang/1", "unknown")
    assert write["process"].startswith(f"{gateways[0].proc.pid}-")
    assert hanging.answer().json()["error"]["outcome"] == "unknown"
    assert upstream.cut_off.wait(timeout=30)


@postgres_only
def test_a_process_that_stops_answering_cannot_hold_an_engage(
        config: Path, upstream: Recorder, gateways: list[Proc]) -> None:
    gateways += start_gateways(config, 2)
    (writing, _), (_, engaging) = gateways[0].urls, gateways[1].urls
    hanging = Hanging(writing, upstream)
    stopped = gateways[0].proc
    stopped.send_signal(signal.SIGSTOP)
    try:
        [write] = engage_within_engage_wait(engaging).json()["in_flight"]
    finally:
        stopped.send_signal(signal.SIGCONT)
    # what the store knew: the intent of the silent process, outcome unknown
    assert (write["path"], write["state"]) == ("/hang/1", "unknown")
    assert write["process"].startswith(f"{stopped.pid}-")
    # resumed, it hears the freeze and cuts its write off
    assert hanging.answer().status_code == 423
    assert upstream.cut_off.wait(timeout=30)
