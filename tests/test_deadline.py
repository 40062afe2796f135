"""``gateway.deadline.within``: a cancel that arrives as the wait ends is a cancel.

Python 3.11's ``asyncio.wait_for`` returned the result instead, and the cancelled task
ran on: the kill switch's heartbeat, cancelled by ``stop`` as its bus check answered,
looped for ever, and the suite hung in a gateway's stop (seen in
``tests/trust/test_secrets.py`` under CI, twice in two sessions)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.deadline import within


async def _cancelled_as_it_ends(wait: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> bool:
    """Whether a task cancelled in the same step as its wait ends stops."""
    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ran_on = asyncio.Event()

    async def loop() -> None:
        await wait(inner, 5)
        ran_on.set()  # the cancel was lost
        await asyncio.Event().wait()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the task waits
    inner.set_result(None)  # the wait ends ...
    task.cancel()  # ... as the task is cancelled
    await asyncio.wait([task], timeout=1)
    stopped = task.done() and task.cancelled() and not ran_on.is_set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return stopped


async def test_a_cancel_as_the_wait_ends_stops_the_task() -> None:
    assert await _cancelled_as_it_ends(within)


async def test_the_standard_wait_for_loses_it_before_3_12() -> None:
    """The check above can fail: the standard library's wait_for fails it on 3.11 (the
    Python this project supports first) and passes it from 3.12, which waits as
    ``within`` does."""
    assert await _cancelled_as_it_ends(asyncio.wait_for) is (sys.version_info >= (3, 12))


async def test_within_times_out_and_returns() -> None:
    assert await within(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await within(asyncio.Event().wait(), 0.01)
