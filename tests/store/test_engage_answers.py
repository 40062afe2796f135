"""How soon a process answers an engage: before its re-read of the store when none of
its writes the freeze covers is on its way, or once those are done (waited for, never
cut off by the message alone). Two processes' worth of state on one store, every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.model import Freeze, FreezeScope, utcnow
from gateway.services.killswitch import FreezeState
from gateway.store.sql import SqlStore


class Gated:
    """Process A, whose re-reads of the freezes wait at a gate, and B, which engages."""

    def __init__(self, a: FreezeState, b: FreezeState, gate: asyncio.Event,
                 heard: asyncio.Event) -> None:
        self.a, self.b, self.gate, self.heard = a, b, gate, heard


@pytest.fixture
async def gated(store: SqlStore, store_url: str,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gated]:
    other = SqlStore(store_url)
    await other.start()
    a = FreezeState(store, store.bus(), engage_wait=5.0)
    b = FreezeState(other, other.bus(), engage_wait=5.0)
    gate, heard = asyncio.Event(), asyncio.Event()
    deliver = a._heard

    def hearing(message: dict[str, Any]) -> None:
        deliver(message)
        heard.set()
    a._heard = hearing  # type: ignore[method-assign]  # before start: the bus's
    for state in (a, b):
        await state.start()
    view = store.freeze_view

    async def gated_view() -> tuple[int, list[Freeze]]:
        await gate.wait()
        return await view()
    monkeypatch.setattr(store, "freeze_view", gated_view)
    yield Gated(a, b, gate, heard)
    gate.set()
    for state in (a, b):
        await state.stop()
    await other.close()


def stop() -> Freeze:
    return Freeze(FreezeScope.GLOBAL, None, "stop", "alice", utcnow())


async def test_nothing_on_its_way_answers_before_the_re_read(gated: Gated) -> None:
    async with asyncio.timeout(4):  # less than engage_wait: A answered, it was not waited out
        engaged = await gated.b.engage(stop())
    assert engaged.in_flight == []
    reading = gated.a._reading
    assert reading is not None and not reading.done()  # A's re-read is still out
    gated.gate.set()
    await reading
    assert [f.reason for f in gated.a.active] == ["stop"]


async def test_a_write_on_its_way_is_waited_for_then_answered_before_the_re_read(
        gated: Gated) -> None:
    entered, finish = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        async with gated.a.sending("crm", "bot"):
            entered.set()
            await finish.wait()
    writing = asyncio.create_task(write())
    await entered.wait()
    engaging = asyncio.create_task(gated.b.engage(stop()))
    await gated.heard.wait()
    assert not engaging.done()
    finish.set()
    await writing  # the message cut nothing off: the write ended on its own
    async with asyncio.timeout(4):
        engaged = await engaging
    assert engaged.in_flight == []
    reading = gated.a._reading
    assert reading is not None and not reading.done()
