"""Agents waiting on their held calls.

An agent may wait up to ``approval.wait`` seconds (or what it asks with
``Prefer: wait=N``, up to ``approval_max_wait``) for the decision. A waiter is
woken at once by a change made in this process (``wake``) and reads the store
every ``POLL`` seconds for changes made by other processes.
"""

from __future__ import annotations

import asyncio
import re
import time

from gateway.core.approvals import HeldCall
from gateway.ports import HeldCallStore

POLL = 0.25  # seconds between store reads while an agent waits (other processes' decisions)
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def prefer_wait(headers: list[tuple[str, str]]) -> float | None:
    for name, value in headers:
        if name == "prefer":
            match = _PREFER_WAIT.search(value)
            if match:
                return float(match.group(1))
    return None


class Waiters:
    def __init__(self, store: HeldCallStore) -> None:
        self.store = store
        self._changed: dict[str, asyncio.Event] = {}

    async def wait(self, call_id: str, seconds: float) -> HeldCall:
        """Until the call is decided and done, or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        event = self._changed.setdefault(call_id, asyncio.Event())
        try:
            while True:
                held = await self.store.get_held(call_id)
                assert held is not None
                if held.status.terminal:
                    return held
                left = deadline - time.monotonic()
                if left <= 0:
                    return held
                try:
                    await asyncio.wait_for(event.wait(), min(left, POLL))
                except TimeoutError:
                    pass
                event.clear()
        finally:
            if not event.is_set():
                self._changed.pop(call_id, None)

    def wake(self, call_id: str) -> None:
        """The call changed here: its waiters read it now."""
        event = self._changed.get(call_id)
        if event is not None:
            event.set()
