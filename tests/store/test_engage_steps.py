"""How many loop iterations an answer to an engage costs the process that answers. Under
load each iteration is the CPU of every request the loop serves, and the engage waits
for the answer: the answer goes out in the step that heard the engage when nothing the
freeze covers is on its way, and one iteration after the last covered write ended
otherwise. Iterations are counted by yielding (``asyncio.sleep(0)``) once, nothing waits
on the clock. Every backend, with its own bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.killswitch import InFlight
from gateway.core.model import Freeze, FreezeScope, utcnow
from gateway.services.killswitch import FreezeState
from gateway.services.killswitch_messages import freeze_json
from gateway.store.bus import CHANNEL, PgBus
from gateway.store.sql import SqlStore

Sent = list[tuple[dict[str, Any], str | None]]


class Answering:
    """Process A: its answers are recorded when published, its re-reads of the freezes
    wait at a gate (so it answers before them, as it does while the store is busy)."""

    def __init__(self, state: FreezeState, sent: Sent, gate: asyncio.Event) -> None:
        self.state, self.sent, self.gate = state, sent, gate

    def engage(self, key: str) -> dict[str, Any]:
        freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "alice", utcnow())
        return {"type": "engage", "id": key, "from": "b", "wait": 4.0, "generation": 1,
                "freeze": freeze_json(freeze)}


@pytest.fixture
async def answering(store: SqlStore, monkeypatch: pytest.MonkeyPatch,
                    ) -> AsyncIterator[Answering]:
    bus = store.bus()
    state = FreezeState(store, bus, engage_wait=5.0)
    await state.start()
    sent: Sent = []

    async def publish(message: dict[str, Any], to: str | None = None) -> None:
        sent.append((message, to))
    monkeypatch.setattr(bus, "publish", publish)
    gate, view = asyncio.Event(), store.freeze_view

    async def gated_view() -> tuple[int, list[Freeze]]:
        await gate.wait()
        return await view()
    monkeypatch.setattr(store, "freeze_view", gated_view)
    yield Answering(state, sent, gate)
    gate.set()
    await state.stop()


def answer(key: str) -> tuple[dict[str, Any], str]:
    return {"type": "answer", "id": key, "in_flight": [], "final": True}, "b"


async def test_with_nothing_on_its_way_the_answer_goes_out_in_the_step_that_heard(
        answering: Answering) -> None:
    loop = asyncio.get_running_loop()
    sent_then: asyncio.Future[Sent] = loop.create_future()

    def hear() -> None:  # as a bus delivers: a callback, no task running
        answering.state._heard(answering.engage("e1"))
        sent_then.set_result(list(answering.sent))
    loop.call_soon(hear)
    assert await sent_then == [answer("e1")]
    reading = answering.state._reading
    assert reading is not None and not reading.done()  # before the re-read


async def test_the_answer_goes_out_one_iteration_after_the_last_covered_write_ends(
        answering: Answering) -> None:
    entered, finish = asyncio.Event(), asyncio.Event()

    async def write() -> Sent:
        async with answering.state.sending("crm", "bot", InFlight(
                "j1", "bot", "crm", "PATCH", "/items/1", answering.state.member)):
            entered.set()
            await finish.wait()
        await asyncio.sleep(0)  # one loop iteration
        return list(answering.sent)
    writing = asyncio.create_task(write())
    await entered.wait()
    answering.state._heard(answering.engage("e2"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert answering.sent == []  # the write is on its way: waited for
    finish.set()
    assert await writing == [answer("e2")]


async def test_an_engage_heard_inside_a_task_is_answered_from_a_task(
        answering: Answering) -> None:
    answering.state._heard(answering.engage("e3"))  # (tests, and any caller in a task)
    assert answering.sent == []
    await asyncio.sleep(0)
    assert answering.sent == [answer("e3")]


async def test_a_first_step_run_outside_its_task_can_time_out_and_be_cancelled(
        answering: Answering) -> None:
    """``_spawn_now``: the first step runs as the task (``asyncio.timeout`` needs it),
    and what the task later throws in (a timeout's cancel) reaches the coroutine."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[str] = loop.create_future()
    never: asyncio.Future[None] = loop.create_future()

    async def work() -> None:
        try:
            async with asyncio.timeout(0.001):
                await never
        except TimeoutError:
            ended.set_result("timed out")
    loop.call_soon(answering.state._spawn_now, work())
    assert await ended == "timed out"


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # asyncpg's listener
async def test_the_listening_connection_delivers_in_the_step_that_reads(
        store: SqlStore) -> None:
    bus = store.bus()
    assert isinstance(bus, PgBus)
    heard: list[dict[str, Any]] = []
    await bus.start(heard.append)
    try:
        assert bus._listener is not None
        bus._listener._process_notification(0, CHANNEL, '{"type": "engage", "from": "x"}')
        assert heard == [{"type": "engage", "from": "x"}]  # not call_soon'ed
        bus._listener._process_notification(
            0, CHANNEL, json.dumps({"type": "x", "from": bus.member}))
        assert len(heard) == 1  # its own, dropped as before
    finally:
        await bus.close()
