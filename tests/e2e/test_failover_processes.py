"""A store that fails over, with real processes: two gateways on one multi-host
``database_url`` naming a primary and its synchronous standby (started by the
test, ``tests.replicated``), writers through both, and a failover in between.

- A freeze engaged before the failover holds after it, on both processes.
- Writes during it (the primary crashed, none promoted yet, then the standby
  promoted): each is answered 200 or 503 ``journal_unavailable``, never
  sent unjournaled: every write the upstream received has its journal entry on
  the promoted standby. Writes resume on both processes without a restart.
- A freeze engaged after it reaches every process: both listen on the new
  primary again, and the other process refuses the writes it covers.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.e2e.procs import Proc, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.harness import AGENT_KEY, OTHER_KEY, TOKENS, policy_text
from tests.harness import poll as _poll
from tests.replicated import Pair, replicated_pair

BOT = {"X-Gateway-Key": AGENT_KEY}
OTHER = {"X-Gateway-Key": OTHER_KEY}
APPROVER = {"Authorization": f"Bearer {TOKENS['approver']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
RULES = """
- id: items
  match: {methods: [GET, PATCH], path: "/items/{id}"}
  action: allow
"""

poll = functools.partial(_poll, timeout=60)  # a promotion and reconnects take their time


@pytest.fixture
def pair() -> Iterator[Pair]:
    with replicated_pair() as started:
        run(started, started.primary_port, "postgres", "CREATE DATABASE gateway")
        yield started


def run(pair: Pair, port: int, database: str, sql: str) -> list[asyncpg.Record]:
    async def query() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(pair.dsn(port, database))
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()
    return asyncio.run(query())


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    with Recorder.serving() as recorder:
        yield recorder


@pytest.fixture
def gateways(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    config = write_settings(tmp_path, pair.url(), engage_wait=1.0, upstream_timeout=30)
    started = start_gateways(config, 2)
    yield started
    for proc in started:
        proc.stop()


@dataclass(frozen=True)
class Answer:
    path: str
    status: int
    code: str | None


class Writers:
    """Threads PATCHing through each gateway, each path once, until stopped."""

    def __init__(self, proxies: list[str], per_proxy: int = 2) -> None:
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(proxy, f"g{g}w{i}"),
                                          daemon=True)
                         for g, proxy in enumerate(proxies) for i in range(per_proxy)]
        for thread in self._threads:
            thread.start()

    def _write(self, proxy: str, name: str) -> None:
        with httpx.Client(headers=BOT, timeout=60) as client:
            n = 0
            while not self._stop.is_set():
                path = f"/items/{name}-{n}"
                response = client.patch(f"{proxy}/crm{path}", json={"n": n})
                code = response.json().get("error", {}).get("code") \
                    if response.status_code != 200 else None
                with self._lock:
                    self.answers.append(Answer(path, response.status_code, code))
                n += 1

    def count(self, status: int) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.status == status)

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return list(self.answers)


def patch(proxy: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.patch(f"{proxy}/crm{path}", json={"x": 1}, headers=headers, timeout=60)


def writes_go(proxy: str, name: str) -> bool:
    return patch(proxy, f"/items/{name}", BOT).status_code == 200


def test_freezes_and_writes_across_a_failover_on_two_processes(
        pair: Pair, gateways: list[Proc], upstream: Recorder) -> None:
    (proxy_a, admin_a), (proxy_b, admin_b) = (g.urls for g in gateways)
    # a freeze before the failover
    engaged = httpx.post(f"{admin_a}/v1/killswitch/engage", headers=APPROVER, timeout=30,
                         json={"reason": "before", "agent": "other"})
    assert engaged.status_code == 200, engaged.text
    for proxy in (proxy_a, proxy_b):
        assert patch(proxy, "/items/other-before", OTHER).status_code == 423

    writers = Writers([proxy_a, proxy_b])
    try:
        poll(lambda: writers.count(200) >= 20, "writes landing")
        pair.crash_primary()
        refused = writers.count(503)  # while there is no primary: every writer refused
        poll(lambda: writers.count(503) >= refused + 4, "writes refused with no primary")
        pair.promote()
        # writes resume on both processes, without a restart
        for n, proxy in enumerate((proxy_a, proxy_b)):
            poll(lambda p=proxy, n=n: writes_go(p, f"after-{n}"), f"writes through {proxy} "
                 "after the promotion", interval=0.1)
        ok_after = writers.count(200)
        poll(lambda: writers.count(200) >= ok_after + 20, "the writers' writes landing again")
    finally:
        answers = writers.stop()

    # during: refused as unjournaled, or journaled; nothing else
    assert {a.status for a in answers} <= {200, 503}, {a.status for a in answers}
    assert {a.code for a in answers if a.status == 503} <= {"journal_unavailable"}
    received = {a.path for a in upstream.log if a.method == "PATCH"}
    journaled = {row["path"] for row in run(pair, pair.standby_port, "gateway",
                                            "SELECT path FROM journal WHERE method = 'PATCH'")}
    assert received, "nothing reached the upstream"
    assert received - journaled == set(), "sent without a journal entry on the new primary"
    assert {a.path for a in answers if a.status == 200} <= received

    # the freeze from before still holds, on both
    for proxy in (proxy_a, proxy_b):
        assert patch(proxy, "/items/other-after", OTHER).status_code == 423

    # both listen on the new primary again; a freeze engaged now reaches both
    def listening() -> int:
        return len(run(pair, pair.standby_port, "gateway",
                       "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE "
                       "'gateway-bus %'"))
    poll(lambda: listening() == 2, "both processes listening again")
    engaged = httpx.post(f"{admin_a}/v1/killswitch/engage", headers=APPROVER, timeout=30,
                         json={"reason": "after"})
    assert engaged.status_code == 200, engaged.text
    for proxy in (proxy_b, proxy_a):
        refused = patch(proxy, "/items/bot-frozen", BOT)
        assert refused.status_code == 423, refused.text
        assert "after" in refused.text
    for body in ({"reason": "ok"}, {"reason": "ok", "agent": "other"}):
        released = httpx.post(f"{admin_b}/v1/killswitch/release", headers=ADMIN, json=body,
                              timeout=30)
        assert released.status_code == 200 and released.json()["released"] is not None
    assert writes_go(proxy_a, "released-a") and writes_go(proxy_b, "released-b")


def waiting_for_standby(pair: Pair, like: str) -> list[int]:
    """The primary's backends whose commit waits for the standby, by what they ran."""
    return [row["pid"] for row in run(
        pair, pair.primary_port, "postgres",
        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
        f"AND query ILIKE '{like}'")]


def test_an_intent_the_primary_holds_for_its_standby_is_not_sent(
        pair: Pair, gateways: list[Proc], upstream: Recorder) -> None:
    """The standby is down, so the primary commits each intent locally and holds its
    answer until the standby has it. Cut that connection (a network cut, a
    ``pg_terminate_backend``): the batch's rows are in, visible on the primary, on
    no standby. Each intent of the batch is tried again alone and finds its row;
    it counts as journaled only once the row is on the standby too, for the primary
    may die next and the standby take over without it. So nothing is sent while
    the standby is down, and what is sent once it is back is journaled on it."""
    proxy = gateways[0].urls[0]
    assert writes_go(proxy, "warm")
    pair.stop(pair.standby)
    writers = Writers([proxy], per_proxy=4)  # batches of several intents, some cut off

    def sent() -> set[str]:
        return {a.path for a in upstream.log if a.method == "PATCH"} - {"/items/warm"}

    def found_in() -> bool:
        """Each intents' commit held for the standby is cut off, until an intent tried
        again alone finds its row in (only one of a batch of several is tried so):
        it is sent, or its retry waits for the standby."""
        for pid in waiting_for_standby(pair, "%journal%"):
            run(pair, pair.primary_port, "postgres", f"SELECT pg_terminate_backend({pid})")
        return bool(sent()) or bool(waiting_for_standby(pair, "%pg_logical_emit_message%"))
    try:
        poll(found_in, "an intent of a cut-off batch found in by its retry", interval=0.05)
        assert sent() == set(), "sent while its intent was on no standby"
    finally:
        pair.start(pair.standby)
        answers = writers.stop()

    assert {a.status for a in answers} <= {200, 503}, answers
    assert {a.code for a in answers if a.status == 503} <= {"journal_unavailable"}
    received = sent()
    assert received == {a.path for a in answers if a.status == 200}
    assert received, "no write of a cut-off batch was sent once the standby was back"
    # a synchronous commit returns once the standby has flushed it, not replayed it:
    # read the standby once it has replayed all the primary wrote
    lsn = run(pair, pair.primary_port, "postgres",
              "SELECT pg_current_wal_flush_lsn()::text AS lsn")[0]["lsn"]
    poll(lambda: run(pair, pair.standby_port, "postgres",
                     f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn AS done")[0]["done"],
         "the standby to replay what the primary flushed", interval=0.05)
    journaled = {row["path"] for row in run(pair, pair.standby_port, "gateway",
                                            "SELECT path FROM journal WHERE method = 'PATCH'")}
    assert received <= journaled
