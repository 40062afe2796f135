"""Agents waiting on their held calls, and coming back to them.

An agent may wait up to ``approval.wait`` seconds (or what it asks with
``Prefer: wait=N``, up to ``approval_max_wait``) for the decision. A waiter is
woken at once by a change made in this process (``wake``) and reads the store
every ``POLL`` seconds for changes made by other processes.

An agent whose own timeout is shorter than the wait closes its connection and,
like most SDKs, sends the call again. The call stays held (an operator may still
approve it, and then it runs once), and the moment the connection closes it is
marked as left unanswered, in the store (``leave_held``, with its audit record);
the resend rejoins it (``rejoin``) instead of queueing a second call that an
operator could approve as well: one call, one execution, and the resend gets its
answer (``gateway.core.approvals.resend_key`` says what makes a resend). A resend
that reaches this process while the mark is being saved waits for it; one that
reaches another process in that millisecond queues a call of its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from gateway.core.approvals import REJOIN_WINDOW, HeldCall, audit_item, resend_key
from gateway.core.model import utcnow
from gateway.core.policy.compiled import Upstream
from gateway.errors import JournalUnavailable
from gateway.ports import ApprovalStore
from gateway.services.call import AgentLink

log = logging.getLogger("gateway.approvals")
POLL = 0.25  # seconds between store reads while an agent waits (other processes' decisions)
MARK_WAIT = 5.0  # seconds a resend waits for this process to mark the call it resends
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
        self._leaving: dict[str, asyncio.Future[None]] = {}  # resend key -> its mark, saving

    async def wait(self, held: HeldCall, seconds: float, key: str,
                   link: AgentLink | None = None) -> HeldCall | None:
        """Until the call is decided and done, or ``seconds`` pass; None once the agent's
        connection closed first: the call is then marked as left with ``key``."""
        deadline = time.monotonic() + seconds
        event = self._changed.setdefault(held.id, asyncio.Event())
        left: list[asyncio.Future[None]] = []

        def gone() -> None:  # on the connection's close: a resend now waits for the mark
            left.append(self._leaving.setdefault(key, asyncio.get_running_loop().create_future()))
            event.set()

        forget = link.on_close(gone) if link is not None else _nothing
        try:
            while not left:
                current = await self.store.get_held(held.id)
                assert current is not None
                remaining = deadline - time.monotonic()
                if current.status.terminal or remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, POLL))
                except TimeoutError:
                    pass
                event.clear()
        finally:
            forget()
            if not event.is_set():
                self._changed.pop(held.id, None)
        if left:  # even as the answer came: the agent cannot read it, its resend can
            await self._mark(held, key, left[0])
            return None
        return current

    async def _mark(self, held: HeldCall, key: str, saving: asyncio.Future[None]) -> None:
        """Its agent left before the answer: the call stays, for the resend to rejoin."""
        try:
            await self.store.leave_held(held.id, key, utcnow(),
                                        audit_item(held.agent, "approval.agent_left", held))
        except Exception as exc:  # the resend queues a second call, as it did before
            log.warning("could not mark held call %s as left by its agent: %s", held.id, exc)
        finally:
            if self._leaving.get(key) is saving:
                del self._leaving[key]
            if not saving.done():
                saving.set_result(None)

    async def rejoin(self, upstream: Upstream, headers: list[tuple[str, str]],
                     held: HeldCall) -> tuple[HeldCall | None, str]:
        """The call ``held`` (not yet stored) is a resend of, if its agent left that one
        unanswered (then rejoined, once); and the key a resend of ``held`` has. A mark
        this process is still saving is waited for."""
        name = upstream.idempotency_header(held.rule) or IDEMPOTENCY_KEY
        key = resend_key(held, next((v for k, v in headers if k == name.lower()), None))
        saving = self._leaving.get(key)
        if saving is not None:  # bounded: a waiter cancelled before its mark never sets it
            await asyncio.wait([saving], timeout=MARK_WAIT)
        try:
            return await self.store.rejoin_held(key, held.agent, utcnow() - REJOIN_WINDOW), key
        except Exception as exc:
            log.error("could not look for the held call %s resends: %s", held.id, exc)
            raise JournalUnavailable("the approval queue could not be read; "
                                     "the call was not sent") from exc

    def wake(self, call_id: str) -> None:
        """The call changed here: its waiters read it now."""
        event = self._changed.get(call_id)
        if event is not None:
            event.set()


def _nothing() -> None:
    pass
