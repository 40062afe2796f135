"""Waiting with a deadline, without losing a cancel.

Python 3.11's ``asyncio.wait_for`` swallows a cancel that arrives as the awaited
thing completes: it returns the result, and the task that was cancelled runs on
(fixed in 3.12, which waits through ``asyncio.timeout``). A background loop of the
gateway's caught in that moment never ended, and the ``stop`` that awaited it hung
(seen: the kill switch's heartbeat as its bus check answered; the suite waited
forever on a gateway's stop). ``within`` is ``wait_for`` on ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``awaitable``'s result, or ``TimeoutError`` after ``seconds`` (None: no limit); a
    cancel of the caller is always a ``CancelledError``."""
    async with asyncio.timeout(seconds):
        return await awaitable


def cancelled() -> bool:
    """Whether the running task was asked to stop: a background loop that catches
    ``Exception`` checks it, for a driver may hand a cancel on as another error."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
