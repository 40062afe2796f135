"""``FreezeState.sending``'s block cut off by an engage (``cut_at``): the same outcomes
and cancel accounting as the ``asyncio.timeout`` it replaces. No clock is waited on: a
deadline already past cuts the block off at the loop's next turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.core.killswitch import InFlight
from gateway.core.model import Freeze
from gateway.errors import WriteCutOff, WritesFrozen
from gateway.services.killswitch import FreezeState

WRITE = InFlight("j-1", "bot", "crm", "PATCH", "/customers/1")


class Store:
    process = "p-1"

    async def freeze_view(self) -> tuple[int, list[Freeze]]:
        return 0, []

    async def killswitch_generation(self) -> int:
        return 0


async def on_its_way(write: InFlight | None, inside: Any = None) -> tuple[Any, asyncio.Task[Any]]:
    """A block entered by a task of its own, waiting forever (``inside`` instead, if
    given); the block, and the task (its result: the task's ``cancelling()`` after)."""
    state = FreezeState(Store())  # type: ignore[arg-type]
    await state.load()
    entered = asyncio.Event()

    async def send() -> int:
        async with state.sending("crm", "bot", write):
            entered.set()
            await (inside() if inside is not None else asyncio.get_running_loop().create_future())
        return 0

    async def sending() -> int:
        try:
            return await send()
        finally:
            cancelling.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
    cancelling: list[int] = []
    task = asyncio.create_task(sending())
    await entered.wait()
    [block] = state._sending.values()
    return (block, cancelling), task


async def test_a_write_cut_off_is_write_cut_off_and_its_task_is_not_left_cancelling() -> None:
    (block, cancelling), task = await on_its_way(WRITE)
    block.cut_at(asyncio.get_running_loop().time())
    with pytest.raises(WriteCutOff) as cut:
        await task
    assert (cut.value.extra, cancelling) == ({"outcome": "unknown", "journal": "j-1"}, [0])


async def test_a_capture_cut_off_is_writes_frozen() -> None:
    (block, _), task = await on_its_way(None)
    block.cut_at(asyncio.get_running_loop().time())
    with pytest.raises(WritesFrozen):
        await task


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    (block, cancelling), task = await on_its_way(WRITE)
    block.cut_at(asyncio.get_running_loop().time())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelling == [1]  # the other cancel's, still requested


async def test_a_timeout_error_raised_once_cut_off_is_the_cut_off() -> None:
    async def converts() -> None:  # as a client that turns its cancel into a timeout
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            raise TimeoutError("read timed out") from None
    (block, cancelling), task = await on_its_way(WRITE, converts)
    block.cut_at(asyncio.get_running_loop().time())
    with pytest.raises(WriteCutOff):
        await task
    assert cancelling == [0]


async def test_a_block_that_ends_before_its_deadline_is_not_cut_off() -> None:
    done = asyncio.Event()

    async def until_done() -> None:
        await done.wait()
    (block, cancelling), task = await on_its_way(WRITE, until_done)
    loop = asyncio.get_running_loop()
    block.cut_at(loop.time() + 3600)
    block.cut_at(loop.time() + 7200)  # a later deadline does not move it
    done.set()
    assert await task == 0 and cancelling == [0]
    assert not task.cancelled()


async def test_the_earliest_deadline_cuts_it_off() -> None:
    (block, cancelling), task = await on_its_way(WRITE)
    loop = asyncio.get_running_loop()
    block.cut_at(loop.time() + 3600)
    block.cut_at(loop.time())  # a second engage, sooner
    with pytest.raises(WriteCutOff):
        await task


async def test_a_block_that_has_ended_is_never_cut_off_after() -> None:
    done = asyncio.Event()

    async def until_done() -> None:
        await done.wait()
    (block, cancelling), task = await on_its_way(WRITE, until_done)
    done.set()
    assert await task == 0
    block.cut_at(asyncio.get_running_loop().time())  # (a late engage's)
    await asyncio.sleep(0)
    assert not block.expired and cancelling == [0]
