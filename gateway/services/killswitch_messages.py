"""What the processes on the bus tell each other about freezes (``freezes.FreezeState``).

An engage is announced (``engage``, with the freeze and how long the others may take;
sent by the freeze's commit where the store can, ``Bus.at_commit``); each process
re-reads the store, settles its covered writes and answers with those it cut off
(``answer``, in chunks, to the engaging process alone; at once, nothing, when no write
the freeze would cover is on its way). A release, or anything
else, only makes the others re-read. Messages are hints, never state: see
``gateway.services.killswitch``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.killswitch import InFlight
from gateway.core.model import Freeze, FreezeScope, new_id, parse_iso, utcnow
from gateway.ports import Bus, FreezeStore, Notice

log = logging.getLogger("gateway.killswitch")
ANSWER_EARLY = 0.25  # seconds before engage_wait the other processes answer by
ANSWER_GRACE = 0.25  # seconds after engage_wait an engage still waits for answers
CLOSED_POLL = 0.05  # seconds between reads of the intents of processes that did not answer
ANSWER_CHUNK = 25  # in-flight writes per answer (PostgreSQL NOTIFY carries 8000 bytes)


@dataclass(slots=True)
class Answers:
    """The answers to one engage: who was asked, who answered, what they cut off.
    Answers may come before the engage knows whom it asked (``expect``): it announces
    with its commit, while it reads the members."""

    expected: set[str] = field(default_factory=set)
    known: bool = False  # expected is set
    answered: set[str] = field(default_factory=set)
    in_flight: list[InFlight] = field(default_factory=list)
    # a future, not an Event: the engage resumes one loop iteration after the last answer
    complete: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    def add(self, member: str, items: list[InFlight], final: bool) -> None:
        self.in_flight.extend(items)
        if final:
            self.answered.add(member)
        self._check()

    def expect(self, members: set[str]) -> None:
        self.expected, self.known = members, True
        self._check()

    def _check(self) -> None:
        if self.known and self.expected <= self.answered and not self.complete.done():
            self.complete.set_result(None)


class Watched(Protocol):
    """A block on its way (``FreezeState.sending``'s): the watches its end resolves."""

    watches: list[Watch] | None


class Watch:
    """Until every one of some blocks on their way has ended: ``done`` is resolved by the
    last one's exit, in that step. An engage's answer waits on it; ``asyncio.wait`` on
    a future per block took three loop iterations more after the last one ended, and
    under load each iteration of the loop is the CPU of every request it serves."""

    __slots__ = ("left", "done")

    def __init__(self, blocks: Sequence[Watched], done: asyncio.Future[None]) -> None:
        self.left, self.done = len(blocks), done
        for block in blocks:
            if block.watches is None:
                block.watches = [self]
            else:
                block.watches.append(self)
        if not blocks and not done.done():
            done.set_result(None)

    def finished(self) -> None:
        self.left -= 1
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)


class FreezeMessages:
    """``FreezeState``'s side of the bus: announcing an engage, collecting the answers,
    hearing the others' messages and answering them."""

    _store: FreezeStore
    _bus: Bus | None
    member: str
    engage_wait: float
    _generation: int
    _active: list[Freeze]
    _answers: dict[str, Answers]
    _horizon: Callable[[], float]
    _routes: Mapping[str, Callable[[dict[str, Any]], None]]

    if TYPE_CHECKING:  # FreezeState's
        def _hint(self, freeze: Freeze | None) -> asyncio.Task[None]: ...

        async def _settle(self, freezes: list[Freeze], deadline: float) -> list[InFlight]: ...

        async def load(self) -> None: ...

        def _on_the_way(self, freeze: Freeze) -> Sequence[Watched]: ...

        def _spawn(self, work: Any) -> asyncio.Task[Any]: ...

    def _ended(self, blocks: Sequence[Watched],
               done: asyncio.Future[None] | None = None) -> asyncio.Future[None]:
        """A future resolved when every one of ``blocks`` has ended (``done``, if given)."""
        if done is None:
            done = asyncio.get_running_loop().create_future()
        Watch(blocks, done)
        return done

    def _spawn_now(self, work: Coroutine[Any, Any, Any]) -> None:
        """``_spawn``, but ``work``'s first step runs now, in the caller's step, as the
        task (what Python 3.12's eager tasks do): an answer with nothing to wait for is
        sent from the callback that heard the engage, not one loop iteration later, a
        whole iteration of a loop busy with writes (0.5-2.6 ms at 8 PATCH connections)."""
        if asyncio.current_task() is not None:  # called from a task: no step to share
            self._spawn(work)
            return
        loop = asyncio.get_running_loop()
        first: list[tuple[str, Any]] = []
        task = self._spawn(_rest(work, first))  # its own first step comes next iteration
        asyncio.tasks._enter_task(loop, task)  # noqa: SLF001 (current_task() is it)
        try:
            first.append(("yielded", work.send(None)))
        except StopIteration as stop:
            first.append(("returned", stop.value))
        except BaseException as exc:  # raised in the task, where _finished logs it
            first.append(("raised", exc))
        finally:
            asyncio.tasks._leave_task(loop, task)  # noqa: SLF001

    async def _members(self) -> set[str] | None:
        if self._bus is None:
            return None
        try:
            return await self._bus.members()
        except Exception:
            log.exception("kill switch: could not list the processes on the bus")
            return None

    def _expecting(self, freeze: Freeze, deadline: float) -> tuple[str, Notice | None]:
        """Before an engage's commit: the key its answers will come under (they are
        collected from now on) and the announcement its commit can send (None: the
        bus has no such thing, ``_announce`` publishes)."""
        key = new_id()
        self._answers[key] = Answers()
        asyncio.get_running_loop().call_at(deadline + 2 * ANSWER_GRACE, self._answers.pop,
                                           key, None)
        if self._bus is None:
            return key, None
        try:
            return key, self._bus.at_commit(self._announcement(key, freeze, deadline))
        except Exception:
            log.exception("kill switch: could not prepare the freeze's announcement")
            return key, None

    def _announcement(self, key: str, freeze: Freeze, deadline: float) -> dict[str, Any]:
        return {"type": "engage", "id": key, "generation": self._generation,
                "freeze": freeze_json(freeze),
                "wait": max(0.0, deadline - ANSWER_EARLY - asyncio.get_running_loop().time())}

    async def _announce(self, key: str, freeze: Freeze, deadline: float,
                        members: set[str] | None, announced: bool) -> Answers | None:
        """Tell every other process, unless the commit did (``announced``); None when
        there is no bus to tell them on (they learn it at their next heartbeat, and the
        store refuses their covered writes)."""
        answers = self._answers.get(key)
        if self._bus is None or members is None or answers is None:
            self._answers.pop(key, None)
            return None
        answers.expect(members)
        if announced or not members:
            return answers
        try:
            await self._bus.publish(self._announcement(key, freeze, deadline))
        except Exception:
            log.exception("kill switch: could not announce the freeze")
            self._answers.pop(key, None)
            return None
        return answers

    async def _closed(self, ids: set[str], deadline: float) -> None:
        """Until none of the intents ``ids`` is open any more (their writes finished or
        were cut off), or ``deadline`` (loop time): the store is polled."""
        loop = asyncio.get_running_loop()
        since = utcnow() - timedelta(seconds=self._horizon())
        while loop.time() < deadline:
            try:
                still = {p.id for p in await self._store.pending_intents(since)} & ids
            except Exception:
                log.exception("kill switch: could not read the open intents")
                return
            if not still:
                return
            await asyncio.sleep(min(CLOSED_POLL, max(0.0, deadline - loop.time())))
        log.warning("kill switch: writes of processes that did not answer were still open "
                    "at engage_wait; they are reported as unknown")

    async def _open_intents(self) -> list[InFlight]:
        since = utcnow() - timedelta(seconds=self._horizon())
        try:
            return await self._store.pending_intents(since)
        except Exception:
            log.exception("kill switch: could not read the open intents")
            return []

    def _heard(self, message: dict[str, Any]) -> None:
        """A hint: the store is re-read, whatever the message says (``_hint``)."""
        try:
            kind = message.get("type")
            route = self._routes.get(kind) if isinstance(kind, str) else None
            if route is not None:  # not the kill switch's (a write its agent left)
                route(message)
            elif kind == "engage":
                try:
                    freeze: Freeze | None = freeze_from(message["freeze"])
                except Exception:
                    freeze = None
                reading = self._hint(freeze)  # before anything else
                if freeze is not None:
                    self._spawn_now(self._answer(message, freeze, reading))
            elif kind != "answer":
                self._hint(None)
            else:
                answers = self._answers.get(str(message["id"]))
                if answers is not None:
                    answers.add(str(message["from"]),
                                [InFlight.from_json(i) for i in message["in_flight"]],
                                bool(message["final"]))
        except Exception:
            log.exception("kill switch: bad message on the bus: %r", message)

    async def _answer(self, message: dict[str, Any], hinted: Freeze,
                      reading: asyncio.Task[None]) -> None:
        """Settle the writes of the freeze the store holds under the hint's id: none for
        a forged or replayed message (if the store cannot be read, the hint's own).

        With no write the hint covers on its way (or once those are done, if that is
        before the re-read is back), the answer (nothing cut off) goes before the
        re-read: it is true whatever the store says, since a covered write that comes
        now waits for that re-read (``_checked``) and is refused if the store holds the
        freeze. A hint still changes nothing: no write is cut off."""
        heard = time.perf_counter()
        wait = min(max(0.0, float(message["wait"])), self.engage_wait)
        deadline = asyncio.get_running_loop().time() + wait
        if not await self._to_settle(hinted, reading):
            await self._reply(message, [])
            log.info("kill switch: answered engage %s in %.2f ms, before the re-read (no "
                     "covered write on its way)", message["id"],
                     (time.perf_counter() - heard) * 1000)
            return
        try:
            await asyncio.shield(reading)
            freezes = [f for f in self._active if f.id == hinted.id]
        except Exception:
            freezes = [hinted]
        read = time.perf_counter()
        cut = [i.to_json() for i in await self._settle(freezes, deadline)] if freezes else []
        settled = time.perf_counter()
        await self._reply(message, cut)
        log.info("kill switch: answered engage %s in %.2f ms: re-read %.2f, own writes %.2f, "
                 "%d cut off", message["id"], (time.perf_counter() - heard) * 1000,
                 (read - heard) * 1000, (settled - read) * 1000, len(cut))
        await self.load()

    async def _to_settle(self, hinted: Freeze, reading: asyncio.Task[None]) -> bool:
        """Until no write ``hinted`` covers is on its way (they are waited for, never
        cut off) or the re-read is back; whether the answer must wait for the re-read
        and settle (False: nothing is left to settle). The last write's end wakes this
        in its own step (``_ended``): one loop iteration, not four, before the answer
        goes out, and the loop is the busiest when an engage comes."""
        going = self._on_the_way(hinted)
        if not going:
            return False
        ready = self._ended(going)

        def wake(_: object) -> None:
            if not ready.done():
                ready.set_result(None)
        reading.add_done_callback(wake)
        try:
            await ready
        finally:
            reading.remove_done_callback(wake)
        return reading.done() or bool(self._on_the_way(hinted))

    async def _reply(self, message: dict[str, Any], cut: list[dict[str, Any]]) -> None:
        assert self._bus is not None
        chunks = [cut[i:i + ANSWER_CHUNK] for i in range(0, len(cut), ANSWER_CHUNK)] or [[]]
        for n, chunk in enumerate(chunks, 1):
            await self._bus.publish({"type": "answer", "id": message["id"], "in_flight": chunk,
                                     "final": n == len(chunks)}, to=str(message["from"]))


async def _rest(work: Coroutine[Any, Any, Any], first: list[tuple[str, Any]]) -> Any:
    """The rest of ``work``, whose first step ``_spawn_now`` ran: how it ended, else
    on from where it yielded."""
    how, value = first[0]
    if how == "returned":
        return value
    if how == "raised":
        raise value
    return await _resumed(work, value)


@types.coroutine
def _resumed(work: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """What ``await work`` does from where ``work`` first yielded ``yielded`` (its first
    step ran outside any task): each value the task sends, each exception it throws
    (a cancel), goes on into ``work``."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            work.close()
            raise
        except BaseException as exc:  # thrown in by the task (a cancel): passed on
            try:
                yielded = work.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = work.send(sent)
            except StopIteration as stop:
                return stop.value


def freeze_json(freeze: Freeze) -> dict[str, Any]:
    return {**freeze.to_json(), "id": freeze.id}


def freeze_from(data: dict[str, Any]) -> Freeze:
    return Freeze(FreezeScope(data["scope"]), data.get("target"), str(data["reason"]),
                  str(data["by"]), parse_iso(str(data["at"])), str(data["id"]))
