"""A worker killed while its agent's write is on its way, and the agent's SDK resending it.

The agent sees its connection reset and, like most SDKs, sends the write again; the
kernel hands the resend to a live worker (or the dead one's replacement). The first try
may have landed (the upstream had it when the worker died), so the resend must not be
sent: before, it was, and one create landed twice (``bench/crash_resend.py``: two POSTs
per create). Now the master tells the live workers at once which worker died, and they
mark its writes still on their way as left with an unknown outcome: the resend gets
``409 already_sent`` (``x-should-retry: false``, so the SDK stops) naming the first try.

Real ``gateway serve --workers 2`` on SQLite and PostgreSQL, openai-python as it comes
(two retries on a connection error), a real upstream holding the POST.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import openai

from tests.faults.procs_support import Gateway, configure, holder, in_thread, query
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import AGENT_KEY, poll

CREATE = {"name": "refund-7", "amount": 70}


def test_the_sdk_resend_of_a_write_whose_worker_was_killed_is_not_sent(
        tmp_path: Path, store_url: str) -> None:
    with FaultUpstream() as upstream:
        gate = upstream.gate("POST", "/items")
        workers = Gateway(configure(tmp_path, store_url, upstream.url), "--workers", "2")
        try:
            client = openai.OpenAI(api_key=AGENT_KEY, base_url=f"{workers.proxy}/up",
                                   timeout=30)
            agent, outcome = in_thread(client.post, "/items", body=CREATE,
                                       cast_to=httpx.Response)
            upstream.wait_for("POST", "/items")
            os.kill(holder(int(upstream.url.rsplit(":", 1)[1])), signal.SIGKILL)
            workers.wait_for(r"worker \d exited \(signal SIGKILL\)")
            gate.released.set()  # the first try lands, after its worker died
            agent.join(60)
            assert not agent.is_alive()
            assert len(upstream.received("POST", "/items")) == 1, outcome
            [error] = outcome
            assert isinstance(error, openai.ConflictError), error
            body = error.response.json()["error"]
            assert body["code"] == "already_sent", body
            assert error.response.headers["x-should-retry"] == "false"
            [first] = [e for e in workers.journal() if e["method"] == "POST"]
            assert body["journal"] == first["id"]
            assert first["state"] in ("intent", "unknown")  # unknown once recovered
        finally:
            workers.stop()


def test_the_resend_of_a_write_whose_process_died_is_not_sent_once_it_is_taken_over(
        tmp_path: Path, store_url: str) -> None:
    """No master to tell: a replica (or the process restarted) takes the dead one's
    heartbeat over, and marks its writes on their way before they become ``unknown``."""
    with FaultUpstream() as upstream:
        gate = upstream.gate("POST", "/items")
        config = configure(tmp_path, store_url, upstream.url, executor_lease=1)
        first = Gateway(config)
        in_thread(first.call, "POST", "/items", json=CREATE)
        upstream.wait_for("POST", "/items")
        first.kill()
        gate.released.set()  # the first try lands, after its process died
        second = Gateway(config)
        try:
            [entry] = poll(lambda: [e for e in second.journal(method="POST")
                                    if e["state"] == "unknown"], "the dead one's write", 30)
            resend = second.call("POST", "/items", json=CREATE)
            assert resend.status_code == 409, resend.text
            assert resend.json()["error"]["code"] == "already_sent"
            assert resend.json()["error"]["journal"] == entry["id"]
            assert len(upstream.received("POST", "/items")) == 1
            again = second.call("POST", "/items", json=CREATE)  # after the resend: a new one
            assert again.status_code == 201, again.text
            assert len(upstream.received("POST", "/items")) == 2
        finally:
            second.stop()


def test_the_resend_of_a_write_whose_replica_was_killed_is_not_sent_by_another(
        tmp_path: Path, store_url: str) -> None:
    """Two replicas on one store, no master between them: the one that was sending dies,
    and the other sees within a fraction of a second that it left nothing connected (on
    PostgreSQL no session, on SQLite no bus socket), long before its heartbeat lapses
    (``executor_lease``, 15 s here): the resend reaching it is not sent."""
    with FaultUpstream() as upstream:
        gate = upstream.gate("POST", "/items")
        config = configure(tmp_path, store_url, upstream.url)
        first, second = Gateway(config), Gateway(config)
        try:
            in_thread(first.call, "POST", "/items", json=CREATE)
            upstream.wait_for("POST", "/items")
            first.kill()
            gate.released.set()  # the first try lands, after its process died
            poll(lambda: query(store_url, "SELECT state FROM left_writes") == [("unknown",)],
                 "the dead replica's write marked", 10)
            resend = second.call("POST", "/items", json=CREATE)
            assert resend.status_code == 409, resend.text
            assert resend.json()["error"]["code"] == "already_sent"
            [entry] = second.journal(method="POST")
            assert resend.json()["error"]["journal"] == entry["id"]
            assert entry["state"] == "intent"  # its heartbeat has not lapsed: not recovered
            assert len(upstream.received("POST", "/items")) == 1
        finally:
            second.stop()
