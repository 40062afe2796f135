"""Writes whose agent left before their answer, and the resends that rejoin them.

An agent whose own timeout is shorter than the upstream's answer closes its
connection while its write is on the way, and its SDK sends the write again. Sent
again, a create or a refund lands twice, and the upstream cannot dedupe it: the
gateway's idempotency key is the journal entry's id, new for the resend. So the
moment the agent's connection closes during the send (``watching``), the write is
marked as left, in the store (``LeftWriteStore``), under the key its resends have
(``gateway.core.resend.key_of``); the other processes on the bus are told of the
key. Once the write is settled, how it ended is kept with the mark, and, if the
upstream answered, its answer (redacted, and exactly, sealed, as a held call's).

A write that may be a resend (``rejoin``) is looked for only when this process knows
of a mark with its key; otherwise nothing is read. A resend that finds its mark sends
nothing: it waits for the first try's answer and gets it, or is told the first try's
outcome is unknown (it may have landed), or, if the first try surely did not leave, is
sent as a call of its own. A resend that leaves in turn marks the write again for the
next. A resend that reaches another process before the bus has told it of the mark
(a few milliseconds after the close) is sent as a new call, as before.

A process that dies while writes are on their way leaves them unsettled, and their
agents see their connections reset and resend them. Each intent carries the key of its
resends (``JournalEntry.resend_key``), so whoever learns of the death first marks the
dead process's writes as left with an unknown outcome (``strand``): its sibling workers
as soon as their master tells them (``services.siblings``), before their next write;
every process on the store within ``DEATH_POLL`` of the death, seeing that a process
with writes on their way has nothing left connected (``Bus.gone``: on PostgreSQL no
session, on SQLite no socket); and whoever takes the dead one's heartbeat over
(``Recovery``). Their resends get ``409 already_sent``: the first try may have landed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from gateway.core.model import utcnow
from gateway.core.policy.compiled import Upstream
from gateway.core.resend import (
    ANSWERED,
    NOT_SENT,
    REJOIN_WINDOW,
    UNKNOWN,
    LeftWrite,
    key_of,
)
from gateway.deadline import cancelled
from gateway.errors import AgentGone, AlreadySent, GatewayError, JournalUnavailable
from gateway.ports import Bus, LeftWriteStore, UpstreamResponse
from gateway.services.call import Call, Reply
from gateway.services.held_calls import replayed, stored_response
from gateway.services.siblings import Siblings

log = logging.getLogger("gateway.resends")
POLL = 0.25  # seconds between reads of a write another process is sending
MARK_WAIT = 5.0  # seconds a resend waits for this process to save the mark it resends
KEEP_LIMIT = 1 << 20  # bytes of an answer kept for the resend (a larger one is not)
LEFT = "left"  # the bus message that tells the other processes of a mark
KNOWN_LIMIT = 10_000  # keys of marks a process keeps in mind
DEATH_POLL = 0.2  # seconds between looks for processes that died with writes on their way
DEAD_MEMORY = 60.0  # seconds a process whose writes were marked is not looked at again


@dataclass(slots=True)
class Watched:
    """One write on its way while its agent's connection is watched."""

    key: str
    entry_id: str
    agent: str
    marking: asyncio.Task[None] | None = None  # the mark, once the agent left
    forget: Callable[[], None] = field(default=lambda: None)


class WriteResends:
    """``store``: where marks are kept (None: no write is marked, no call rejoins one);
    ``bus``: the processes sharing the store (None: this one alone); ``horizon``: the
    longest a write may be on its way, after which a mark never settled (its process
    died) is read as unknown; ``siblings``: the other workers of this process's master,
    and which of them died."""

    def __init__(self, store: LeftWriteStore | None, bus: Bus | None = None,
                 horizon: Callable[[], float] = lambda: 60.0,
                 window: timedelta = REJOIN_WINDOW, siblings: Siblings | None = None) -> None:
        self.store = store
        self._bus = bus
        self._siblings = siblings
        self._seen = 0  # the deaths of siblings whose writes this process has marked
        self._stranding = asyncio.Lock()
        # processes whose writes were marked -> until when (monotonic) not to look at them
        self._dead: dict[str, float] = {}
        self._watch: asyncio.Task[None] | None = None
        self._horizon = horizon  # the longest a write may be on its way, in seconds
        self._window = window
        self._known: dict[str, float] = {}  # key -> until when (monotonic) a mark may have it
        self._saving: dict[str, asyncio.Future[None]] = {}  # key -> its mark, being saved here
        self._settled: dict[str, asyncio.Event] = {}  # entry id -> set once settled here
        self._marks: set[asyncio.Task[None]] = set()  # marks being saved (kept referenced)

    async def start(self) -> None:
        """The marks made before this process started (a restart, a new replica): their
        resends may come here. Without them (the store failing now), a resend of one is
        sent as a call of its own."""
        if self.store is None:
            return
        try:
            for key in await self.store.left_keys(utcnow() - self._window):
                self._know(key)
        except Exception as exc:
            log.warning("could not read the writes agents left before this start: %s", exc)
        if self._bus is not None:
            self._watch = asyncio.create_task(self._deaths())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None

    async def _deaths(self) -> None:
        while True:
            await asyncio.sleep(DEATH_POLL)
            try:
                await self.look_for_deaths()
            except Exception as exc:  # the store or the bus down: the next look
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                log.warning("could not look for processes that died with writes on their "
                            "way: %s", exc)

    async def look_for_deaths(self) -> None:
        """The processes with writes on their way that have nothing left connected: dead;
        their writes are marked (``strand``), and not looked at again for ``DEAD_MEMORY``
        seconds (by then whoever took it over has settled its intents)."""
        assert self.store is not None and self._bus is not None
        now = time.monotonic()
        marked = {process for process, until in self._dead.items() if until > now}
        others = set(await self.store.sending_processes()) - {self._bus.member} - marked
        if not others:
            return
        for process in sorted(await self._bus.gone(others)):
            await self.strand(process)

    def heard(self, message: dict[str, Any]) -> None:
        """The bus: another process marked a write (a hint: the store is the truth)."""
        key = message.get("key")
        if message.get("type") == LEFT and isinstance(key, str) and len(key) == 64:
            self._know(key)

    def _know(self, key: str) -> None:
        now = time.monotonic()
        if len(self._known) >= KNOWN_LIMIT:  # the expired ones go, then the oldest: a
            # flood of forged hints costs a bounded map, and a resend of theirs is sent
            self._known = {k: t for k, t in self._known.items() if t > now}
            while len(self._known) >= KNOWN_LIMIT:
                del self._known[next(iter(self._known))]
        self._known.pop(key, None)  # newest last
        self._known[key] = now + self._window.total_seconds()

    async def rejoin(self, call: Call, key: str) -> Reply | None:
        """The first try's answer if ``call`` (whose resends have ``key``) resends a write
        its agent left; None: send it. Reads nothing unless a mark with its key is known
        here, or a sibling died since the last write."""
        if self._siblings is not None and self._siblings.generation != self._seen:
            await self._siblings_died()
        if not self._known or self.store is None:
            return None
        until = self._known.get(key)
        if until is None:
            return None
        if until < time.monotonic():
            del self._known[key]
            return None
        saving = self._saving.get(key)
        if saving is not None:  # bounded: a mark that fails still ends the future
            await asyncio.wait([saving], timeout=MARK_WAIT)
        try:
            left = await self.store.rejoin_write(key, call.agent, utcnow() - self._window)
        except Exception as exc:  # fail closed: it may be a resend, so it is not sent
            log.error("could not look for the write %s %s resends: %s", call.method,
                      call.raw_path, exc)
            raise JournalUnavailable("the journal could not be read; the write was not "
                                     "sent") from exc
        if left is None:  # none free: not looked for again until a mark is made or heard of
            self._known.pop(key, None)
            return None
        log.info("a resend of %s %s rejoins journal entry %s", call.method, call.raw_path,
                 left.entry_id)
        return await self._answer(call, left)

    async def _answer(self, call: Call, left: LeftWrite) -> Reply | None:
        store = self.store
        assert store is not None  # rejoin looks only with one
        gone = asyncio.Event()
        forget = call.link.on_close(gone.set) if call.link is not None else _nothing
        try:
            while not left.settled:
                settled = self._settled.setdefault(left.entry_id, asyncio.Event())
                waits = [asyncio.ensure_future(settled.wait()),
                         asyncio.ensure_future(gone.wait())]
                try:
                    await asyncio.wait(waits, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                if gone.is_set():  # this resend left too: the next one rejoins
                    self._know(left.key)
                    await self._mark(LeftWrite(left.entry_id, left.key, left.agent, utcnow()))
                    raise AgentGone("the agent closed its connection while its resend "
                                    "waited for the first try; nothing was sent")
                current = await store.left_write(left.entry_id)
                left = current if current is not None else left
                if not left.settled and (utcnow() - left.left_at).total_seconds() \
                        > self._horizon():  # the process sending it died: never settled
                    left = replace(left, state=UNKNOWN)
        finally:
            forget()
            self._settled.pop(left.entry_id, None)  # settled elsewhere: never set here
        if left.state == NOT_SENT:
            return None  # the first try never left: this one is sent
        if left.state == ANSWERED and left.response is not None:
            response = replayed(left.response)
            return Reply(response, "allow", journal_id=left.entry_id,
                         audits=[("rejoined", {"method": call.method, "upstream": call.upstream,
                                               "path": call.raw_path, "journal": left.entry_id,
                                               "status": response.status})])
        raise AlreadySent(
            "this write resends one its agent left (journal entry "
            f"{left.entry_id}), which "
            + ("may have landed: its outcome is unknown" if left.state == UNKNOWN
               else "was answered, but its answer was too large to keep")
            + "; it was not sent again", journal=left.entry_id)

    async def _siblings_died(self) -> None:
        """The writes of the siblings that died since the last look, marked as left
        before this write is looked for: it may be the resend of one."""
        assert self._siblings is not None
        async with self._stranding:
            generation, dead = self._siblings.dead_since(self._seen)
            try:
                for process in dead:
                    await self.strand(process)
            except Exception as exc:  # fail closed: it may be a resend, so it is not sent
                log.error("could not mark the writes of a worker that died: %s", exc)
                raise JournalUnavailable(
                    "the journal could not be read (a worker died, and this write may be "
                    "the resend of one it was sending); the write was not sent") from exc
            self._seen = max(self._seen, generation)

    async def strand(self, process: str) -> None:
        """Dead ``process``'s writes still on their way, marked as left with an unknown
        outcome (``LeftWriteStore.strand_writes``): a resend of one gets ``409
        already_sent``. The other processes on the bus are told of the keys."""
        if self.store is None:
            return
        keys = await self.store.strand_writes(process, utcnow())
        self._dead.pop(process, None)  # newest last
        self._dead[process] = time.monotonic() + DEAD_MEMORY
        while len(self._dead) > KNOWN_LIMIT:
            del self._dead[next(iter(self._dead))]
        for key in keys:
            self._know(key)
        if keys:
            log.error("process %s died with %d writes of agents on their way; their resends "
                      "will not be sent", process, len(keys))
        for key in keys:
            if self._bus is None:
                break
            try:
                await self._bus.publish({"type": LEFT, "key": key})
            except Exception as exc:  # the store has the marks: a restart reads them
                log.warning("could not tell the other processes of a resend key: %s", exc)
                break

    @contextmanager
    def watching(self, call: Call, key: str, entry_id: str) -> Iterator[Watched]:
        """From the send until ``settle``: its agent's connection closing marks it as left
        (one that closed before is the pipeline's: the write is not sent)."""
        watched = Watched(key, entry_id, call.agent)
        if call.link is not None and self.store is not None and not call.link.closed():
            watched.forget = call.link.on_close(lambda: self._gone(watched))
        try:
            yield watched
        finally:
            watched.forget()

    def _gone(self, watched: Watched) -> None:
        key = watched.key
        saving = self._saving.setdefault(key, asyncio.get_running_loop().create_future())
        self._know(key)
        watched.marking = asyncio.ensure_future(self._saved(watched, key, saving))
        self._marks.add(watched.marking)
        watched.marking.add_done_callback(self._marks.discard)

    async def _saved(self, watched: Watched, key: str, saving: asyncio.Future[None]) -> None:
        try:
            await self._mark(LeftWrite(watched.entry_id, key, watched.agent, utcnow()))
        finally:
            if self._saving.get(key) is saving:
                del self._saving[key]
            if not saving.done():
                saving.set_result(None)

    async def _mark(self, left: LeftWrite) -> None:
        """In the store, then told to the other processes (a failure: its resend is sent
        as a call of its own, as before)."""
        assert self.store is not None  # only marked with a store
        try:
            await self.store.leave_write(left)
            if self._bus is not None:
                await self._bus.publish({"type": LEFT, "key": left.key})
        except Exception as exc:
            log.warning("could not mark journal entry %s for its agent's resend: %s",
                        left.entry_id, exc)

    async def settle(self, watched: Watched, response: UpstreamResponse | None,
                     error: GatewayError | None = None) -> None:
        """How a write its agent left ended, kept for its resend (a no-op if it did not).
        Its answer is ready for the agent: a close from now on is not watched."""
        watched.forget()
        if watched.marking is None or self.store is None:
            return
        await watched.marking
        kept: dict[str, Any] | None = None
        if response is not None:
            state = ANSWERED
            body = await response.read()  # the agent is gone: nothing else reads it
            if len(body) <= KEEP_LIMIT:
                kept = stored_response(response)
        else:
            state = UNKNOWN if error is None or error.maybe_sent else NOT_SENT
        try:
            await self.store.settle_left(watched.entry_id, state, kept)
        except Exception as exc:  # its resend reads the mark as still sending
            log.warning("could not keep the answer of journal entry %s for its resend: %s",
                        watched.entry_id, exc)
        finally:
            event = self._settled.pop(watched.entry_id, None)
            if event is not None:
                event.set()


def resend_key(call: Call, upstream: Upstream, own: str | None) -> str:
    """The key of ``call``'s resends (``own``: the agent's idempotency key, if any)."""
    return key_of(call.agent, call.checkpoint.run, upstream.name, call.method,
                  call.raw_path, call.query, call.buffered or b"", own)


def _nothing() -> None:
    pass
