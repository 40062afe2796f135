"""Agents waiting on their held calls, and coming back to them.

An agent may wait up to ``approval.wait`` seconds (or what it asks with
``Prefer: wait=N``, up to ``approval_max_wait``) for the decision. A waiter is
woken at once by a change made in this process (``wake``) and reads the store
every ``POLL`` seconds for changes made by other processes.

An agent whose own timeout is shorter than the wait closes its connection and,
like most SDKs, sends the call again. The call stays held (an operator may still
approve it, and then it runs once), and it is marked as left unanswered
(``left``); the resend rejoins it (``rejoin``) instead of queueing a second call
that an operator could approve as well: one call, one execution, and the resend
gets its answer (``gateway.core.approvals.resend_key`` says what makes a resend).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from gateway.core.approvals import REJOIN_WINDOW, HeldCall, audit_item, resend_key
from gateway.core.model import utcnow
from gateway.core.policy.compiled import Upstream
from gateway.errors import JournalUnavailable
from gateway.ports import ApprovalStore

log = logging.getLogger("gateway.approvals")
POLL = 0.25  # seconds between store reads while an agent waits (other processes' decisions)
GONE = 0.05  # seconds between looks at a waiting agent's connection (no I/O)
IDEMPOTENCY_KEY = "idempotency-key"  # the agent's own key, where the policy names none
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def prefer_wait(headers: list[tuple[str, str]]) -> float | None:
    for name, value in headers:
        if name == "prefer":
            match = _PREFER_WAIT.search(value)
            if match:
                return float(match.group(1))
    return None


class Waiters:
    def __init__(self, store: ApprovalStore) -> None:
        self.store = store
        self._changed: dict[str, asyncio.Event] = {}

    async def wait(self, call_id: str, seconds: float,
                   gone: Callable[[], bool] | None = None) -> HeldCall | None:
        """Until the call is decided and done, or ``seconds`` pass; None once the agent's
        connection is closed (``gone``) before either."""
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
                if await _nap(event, min(left, POLL), gone):
                    return None
                event.clear()
        finally:
            if not event.is_set():
                self._changed.pop(call_id, None)

    async def rejoin(self, upstream: Upstream, headers: list[tuple[str, str]],
                     held: HeldCall) -> tuple[HeldCall | None, str]:
        """The call ``held`` (not yet stored) is a resend of, if its agent left that one
        unanswered (then rejoined, once); and the key a resend of ``held`` has."""
        name = upstream.idempotency_header(held.rule) or IDEMPOTENCY_KEY
        key = resend_key(held, next((v for k, v in headers if k == name.lower()), None))
        try:
            return await self.store.rejoin_held(key, held.agent, utcnow() - REJOIN_WINDOW), key
        except Exception as exc:
            log.error("could not look for the held call %s resends: %s", held.id, exc)
            raise JournalUnavailable("the approval queue could not be read; "
                                     "the call was not sent") from exc

    async def left(self, held: HeldCall, key: str) -> None:
        """Its agent left before the answer: the call stays, for the resend to rejoin."""
        try:
            await self.store.leave_held(held.id, key, utcnow(),
                                        audit_item(held.agent, "approval.agent_left", held))
        except Exception as exc:  # the resend queues a second call, as it did before
            log.warning("could not mark held call %s as left by its agent: %s", held.id, exc)

    def wake(self, call_id: str) -> None:
        """The call changed here: its waiters read it now."""
        event = self._changed.get(call_id)
        if event is not None:
            event.set()


async def _nap(event: asyncio.Event, seconds: float, gone: Callable[[], bool] | None) -> bool:
    """Until ``event`` is set or ``seconds`` pass (False), or the agent is gone (True)."""
    end = time.monotonic() + seconds
    while gone is None or not gone():
        left = end - time.monotonic()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(event.wait(), left if gone is None else min(left, GONE))
            return False
        except TimeoutError:
            pass
    return True
