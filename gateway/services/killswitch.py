"""The kill switch at run time: one truth for every process on the store.

Three layers stop a covered write, from the cheapest:

1. Memory. Each process keeps the active freezes and checks a write against
   them twice: when it arrives (``admit``) and right before it is sent
   (``sending``). Freezes reach every process by push (``ports.Bus``), not by
   a read per write.
2. The store, the arbiter. A journal intent that a freeze covers cannot be
   committed after that freeze (``Store.journal_intent`` returns False), and
   a write without an intent is never sent. So a process that missed a push
   cannot start a covered write; it learns of the freeze on the refusal.
3. The engage itself. The freeze is committed, and every process on the bus
   is told (on PostgreSQL by that commit: a NOTIFY in its transaction); each
   re-reads the freezes from the store, then waits for its own covered writes
   already on their way, cuts off those still going at ``engage_wait`` (a
   little before, so the answer arrives in time), and answers with the ones
   it cut off (at once, with none, when none was on its way). The engage
   returns when all have answered, or at ``engage_wait`` plus a short grace
   for the answers: a process that does not answer cannot make it hang. The
   intents still open in processes that did not answer are reported too;
   everything reported is ``in_flight`` with state ``unknown``.

Messages on the bus are hints, never state: anyone who can reach the bus
(a PostgreSQL role with CONNECT can ``pg_notify``) can forge or replay one.
A message makes this process re-read the freezes from the store; until that
read is back, the writes the message would cover wait for it (so a real
engage stops them as soon as it is heard), and only a freeze the store holds
refuses or cuts off a write.

A heartbeat re-reads the generation (one small read every ``lease / 2``
seconds), and a write is only sent while this process's view of the freezes
was confirmed within ``lease`` (less than ``engage_wait``): a process that
missed a push, or was paused, confirms again before it sends.

What the processes say to each other on the bus is ``killswitch_messages.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, NoReturn

from gateway.core.killswitch import InFlight, covering, covers
from gateway.core.model import Freeze, FreezeScope, utcnow
from gateway.deadline import cancelled
from gateway.errors import JournalUnavailable, WriteCutOff, WritesFrozen
from gateway.ports import Bus, FreezeStore
from gateway.services.killswitch_messages import (
    ANSWER_EARLY,
    ANSWER_GRACE,
    Answers,
    FreezeMessages,
    Watch,
)

log = logging.getLogger("gateway.killswitch")


@dataclass(frozen=True, slots=True)
class Engaged:
    freeze: Freeze
    in_flight: list[InFlight]


class _Sending:
    """``FreezeState.sending``'s block: a class, not an ``@asynccontextmanager``
    generator (its frames and throw/close machinery were 3-4% of a write's CPU).

    An engage cuts it off by cancelling its task at a deadline (``cut_at``), as
    ``asyncio.timeout`` does, with its accounting: the cancel is this block's when the
    task's ``uncancel`` leaves no other request, and the block then raises WriteCutOff
    (or WritesFrozen) instead. The timer is made only when an engage asks: an
    ``asyncio.timeout`` entered on every block (two per write) cost its object and, on
    Python 3.11, a ``getpid`` system call for each look-up of the running loop."""

    __slots__ = ("state", "upstream", "agent", "write", "token", "watches", "task",
                 "cancelling", "cut", "when", "expired")

    def __init__(self, state: FreezeState, upstream: str, agent: str,
                 write: InFlight | None) -> None:
        self.state = state
        self.upstream = upstream
        self.agent = agent
        self.write = write  # None: a capture GET
        self.watches: list[Watch] | None = None  # engages waiting for this block to end
        self.cut: asyncio.Handle | None = None  # the cut-off, once an engage asks for it
        self.when: float | None = None
        self.expired = False  # cut off: its task was cancelled at the deadline

    async def __aenter__(self) -> None:
        state, upstream, agent = self.state, self.upstream, self.agent
        loop = state._loop or asyncio.get_running_loop()
        if loop.time() - state._confirmed > state.lease:
            try:
                await state.confirm()
            except Exception as exc:
                raise JournalUnavailable("the kill switch's state could not be confirmed; "
                                         "the call was not sent") from exc
        if state._hints:
            await state._checked(upstream, agent)
        _raise_if_frozen(covering(state._active, upstream, agent))
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a write is sent from a task")
        self.task, self.cancelling = task, task.cancelling()
        self.token = token = next(state._ids)
        state._sending[token] = self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # never swallows
        del self.state._sending[self.token]
        if self.watches is not None:
            for watch in self.watches:
                watch.finished()
        if self.cut is not None:
            self.cut.cancel()
            self.cut = None
        self.when = -math.inf  # ended: cut_at does nothing from now on
        if not self.expired:
            return
        # as asyncio.timeout's exit: the cut-off's cancel is taken back whatever happened
        if self.task.uncancel() <= self.cancelling and kind is asyncio.CancelledError:
            self._cut_off()  # and it was the only one
        if kind is not None and issubclass(kind, TimeoutError):
            self._cut_off()

    def _cut_off(self) -> NoReturn:
        if self.write is None:
            raise WritesFrozen("writes are frozen: the prior-state read was cut off; "
                               "the write was not sent") from None
        raise WriteCutOff(
            "writes are frozen: this write was cut off on its way after engage_wait; "
            "it may or may not have reached the upstream", outcome="unknown",
            journal=self.write.id) from None

    def cut_at(self, deadline: float) -> None:
        """Cut the block off at ``deadline`` (loop time), unless it is cut off sooner."""
        if self.expired or (self.when is not None and self.when <= deadline):
            return
        if self.cut is not None:
            self.cut.cancel()
        loop = self.task.get_loop()
        self.when = deadline
        self.cut = loop.call_soon(self._expire) if deadline <= loop.time() \
            else loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self.cut = None
        self.expired = True
        self.task.cancel()


class FreezeState(FreezeMessages):
    def __init__(self, store: FreezeStore, bus: Bus | None = None, engage_wait: float = 2.0,
                 horizon: Callable[[], float] = lambda: 60.0,
                 routes: Mapping[str, Callable[[dict[str, Any]], None]] | None = None) -> None:
        self._store = store
        self._bus = bus
        self._routes = routes or {}  # the bus's other messages, by type, for their readers
        self.member = bus.member if bus is not None else store.process
        self.engage_wait = engage_wait
        self.lease = min(1.0, engage_wait / 2)
        self._horizon = horizon  # the longest a write may still be on its way, in seconds
        self._view: list[Freeze] = []
        self._generation = -1
        self._hints: list[tuple[float, Freeze]] = []  # (loop time heard, freeze), unread
        self._reading: asyncio.Task[None] | None = None  # the re-read messages asked for
        self._read_again = False
        self._active: list[Freeze] = []
        self._confirmed = -math.inf  # loop time the last confirmed read was asked
        self._sending: dict[int, _Sending] = {}
        self._ids = itertools.count()
        self._answers: dict[str, Answers] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # start's (looked up once)

    @property
    def active(self) -> list[Freeze]:
        return list(self._active)

    # Lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._bus is not None:  # first: no freeze engaged from now on goes unheard
            await self._bus.start(self._heard)
        await self.load()
        self._spawn(self._chain_audit())  # what an engage of a process that died left
        self._spawn(self._warm())
        self._heartbeat = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        tasks = [t for t in (self._heartbeat, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._heartbeat = self._loop = None
        if self._bus is not None:
            await self._bus.close()

    # The view of the freezes -------------------------------------------------
    async def load(self) -> None:
        asked = asyncio.get_running_loop().time()
        self._view_at(*await self._store.freeze_view(), asked)

    def _view_at(self, generation: int, freezes: list[Freeze], asked: float) -> None:
        """A view read from the store (asked at loop time ``asked``); an older one
        than this process already has changes nothing."""
        if generation >= self._generation:
            self._generation, self._view = generation, freezes
            self._recompute()
        self._read_at(asked)

    def _read_at(self, asked: float) -> None:
        """The store was read at ``asked``: it answers every hint heard before."""
        self._confirmed = max(self._confirmed, asked)
        self._hints = [(heard, f) for heard, f in self._hints if heard > asked]

    async def confirm(self) -> None:
        """Make sure this view is current: one read of the generation."""
        asked = asyncio.get_running_loop().time()
        if await self._store.killswitch_generation() != self._generation:
            await self.load()
        else:
            self._read_at(asked)

    def _hint(self, freeze: Freeze | None) -> asyncio.Task[None]:
        """A message was heard: re-read the store (once more if a read is under way,
        since it may have been asked before the message's change committed)."""
        if freeze is not None:
            self._hints.append((asyncio.get_running_loop().time(), freeze))
        self._read_again = True
        if self._reading is None or self._reading.done():
            self._reading = self._spawn(self._reread())
        return self._reading

    async def _reread(self) -> None:
        while self._read_again:
            self._read_again = False
            await self.load()

    async def _checked(self, upstream: str, agent: str) -> None:
        """Wait for the re-read of any hint that would cover this write; JournalUnavailable
        when it failed (the hint can be neither believed nor dismissed)."""
        if not self._hints or covering([f for _, f in self._hints], upstream, agent) is None:
            return
        reading = self._reading
        if reading is not None and not reading.done():
            try:
                await asyncio.shield(reading)
            except Exception:
                pass
        if covering([f for _, f in self._hints], upstream, agent) is not None:
            raise JournalUnavailable("the kill switch's state could not be confirmed; "
                                     "the call was not sent")

    def _recompute(self) -> None:
        known = {f.id for f in self._active}
        self._active = list(self._view)
        new = [f for f in self._active if f.id not in known]
        if new and self._sending:
            # However this process heard of them (a push, its heartbeat, a refusal): a
            # process off the member list when they were engaged is not asked to settle
            # its writes, so it cuts off its own by the engage's deadline, which it
            # reckons from the freeze's time (the engage waits for that, see _closed).
            age = max(0.0, (utcnow() - max(f.at for f in new)).total_seconds())
            left = min(self.engage_wait, max(0.0, self.engage_wait - ANSWER_EARLY - age))
            self._spawn(self._settle(new, asyncio.get_running_loop().time() + left))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 2)
            try:
                if self._bus is not None:
                    await self._bus.check()
                await self.confirm()
            except Exception as exc:  # writes wait for a confirmed view meanwhile
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                log.warning("kill switch: could not confirm the freezes (%s); writes wait", exc)

    # The write path ----------------------------------------------------------
    def admit(self, upstream: str, agent: str) -> None:
        """The first check of a write, in memory (raises WritesFrozen)."""
        _raise_if_frozen(covering(self._active, upstream, agent))

    async def refused(self, upstream: str, agent: str) -> None:
        """The store refused a write's intent: learn the freeze that covers it, raise."""
        try:
            await self.load()
        except Exception:
            log.exception("kill switch: the freezes could not be read after a refusal")
        _raise_if_frozen(covering(self._active, upstream, agent))
        raise WritesFrozen("writes are frozen (the store refused the journal entry)")

    def sending(self, upstream: str, agent: str, write: InFlight | None = None) -> _Sending:
        """The final check (on entering); the block runs while a write (or, with
        ``write`` None, its capture GET) is on its way upstream.

        An engage may cut the block off: WriteCutOff for a write (it may have
        landed), WritesFrozen for a capture (the write was not sent).
        """
        return _Sending(self, upstream, agent, write)

    def _on_the_way(self, freeze: Freeze) -> list[_Sending]:
        """The writes (and captures) ``freeze`` covers on their way."""
        return [s for s in self._sending.values() if covers(freeze, s.upstream, s.agent)]

    async def _settle(self, freezes: list[Freeze], deadline: float) -> list[InFlight]:
        """Until no write ``freezes`` cover is on its way from this process; those
        still going at ``deadline`` (loop time) are cut off and returned."""
        covered = [s for s in self._sending.values()
                   if covering(freezes, s.upstream, s.agent) is not None]
        for sending in covered:
            sending.cut_at(deadline)
        if covered:
            await self._ended(covered)
        return [s.write for s in covered if s.write is not None and s.expired]

    # Engage and release --------------------------------------------------------
    async def engage(self, freeze: Freeze) -> Engaged:
        loop = asyncio.get_running_loop()
        asked, began = loop.time(), time.perf_counter()
        deadline = asked + self.engage_wait
        # Who to ask, read while the freeze commits: a process that starts listening
        # after this read reads the freezes after that, so it sees this one.
        members = asyncio.create_task(self._members())
        key, announcement = self._expecting(freeze, deadline)
        try:
            change = await self._store.engage(freeze, announcement)
        except BaseException:
            members.cancel()
            self._answers.pop(key, None)
            raise
        stored = change.freeze
        assert stored is not None
        committed = time.perf_counter()
        if change.audit_pending:  # durable with the freeze; linked without holding it up
            self._spawn(self._chain_audit())
        self._view_at(change.generation, change.active, asked)
        # Meanwhile, what the store knows: intents a freeze covers all committed
        # before it did (the arbiter), so this read sees every one there will be.
        pending = asyncio.create_task(self._open_intents())
        answers = await self._announce(key, stored, deadline, await members, change.announced)
        announced = time.perf_counter()
        in_flight = await self._settle([stored], deadline)
        settled = time.perf_counter()
        if answers is not None:
            try:
                async with asyncio.timeout_at(deadline + ANSWER_GRACE):
                    await answers.complete  # one loop iteration after the last answer
            except TimeoutError:
                log.warning("kill switch: no answer from %s within engage_wait; their open "
                            "writes are reported as unknown",
                            ", ".join(sorted(answers.expected - answers.answered)))
            in_flight += answers.in_flight
        answered = {self.member, *(answers.answered if answers is not None else ())}
        answered_at = time.perf_counter()
        # Of processes that did not answer, left, or were off the member list (their push
        # channel down): they cut their covered writes off by the deadline themselves, when
        # their heartbeat reads the freeze; the engage does not return before that.
        unanswered = [p for p in await pending
                      if p.process not in answered and covers(stored, p.upstream, p.agent)]
        if unanswered:
            await self._closed({p.id for p in unanswered}, deadline + ANSWER_GRACE)
        in_flight += unanswered
        done = time.perf_counter()
        log.info("kill switch engaged (%s): %.2f ms: store commit %.2f, announce %.2f, "
                 "own writes %.2f, answers of %d processes %.2f, open intents %.2f; "
                 "%d in flight", stored.scope.value, (done - began) * 1000,
                 (committed - began) * 1000, (announced - committed) * 1000,
                 (settled - announced) * 1000, len(answers.expected) if answers else 0,
                 (answered_at - settled) * 1000, (done - answered_at) * 1000, len(in_flight))
        # (perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds)
        return Engaged(stored, in_flight)

    async def _warm(self) -> None:
        """The store's engage made ready before it is needed (its first one was the
        slowest of a run); an engage does not depend on it. With it, the two reads an
        engage makes beside its commit (the members, the open intents: each took 15-50
        ms in a run's first engage, as long as its commit and the answers together)."""
        try:
            async with asyncio.timeout(self.engage_wait):
                await self._store.warm_engage()
                await self._members()
                await self._open_intents()
        except Exception as exc:
            log.info("kill switch: the engage could not be warmed up (%s)", exc)

    async def _chain_audit(self) -> None:
        """The audit records engages left pending, linked into the chain; retried until
        the store takes them (what a process leaves when it dies, the next start or
        release links)."""
        delay = 0.05
        while True:
            try:
                await self._store.chain_pending_audit()
                return
            except Exception as exc:
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                log.warning("kill switch: an engage's audit record could not be chained yet "
                            "(%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    async def release(self, scope: FreezeScope, target: str | None, by: str, reason: str,
                      at: datetime) -> Freeze | None:
        asked = asyncio.get_running_loop().time()
        change = await self._store.release(scope, target, by, reason, at)
        released = change.freeze
        self._view_at(change.generation, change.active, asked)
        if released is not None and self._bus is not None:
            try:
                await self._bus.publish({"type": "release", "generation": self._generation})
            except Exception:
                log.exception("kill switch: could not announce the release")
        return released

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kill switch: %s", task.exception())


def _raise_if_frozen(freeze: Freeze | None) -> None:
    if freeze is not None:
        target = f" {freeze.target}" if freeze.target else ""
        raise WritesFrozen(f"writes are frozen ({freeze.scope.value}{target}): {freeze.reason}",
                           scope=freeze.scope.value, target=freeze.target)

