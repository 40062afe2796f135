"""The kill switch at run time: what this process knows is frozen, and the
barrier that makes an engage take effect before it returns.

The store is the source of truth (it survives restarts and is shared by
every process). This process also keeps the active freezes in memory, and
every write passes a final in-memory check right before it is forwarded; the
writes past that check are tracked until the upstream answers. ``engage``
persists the freeze, updates memory (so no later write passes), then waits
for the writes already past the check that the freeze covers. When it
returns, no write it covers can still reach the upstream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from gateway.core.killswitch import covering, covers
from gateway.core.model import Freeze, FreezeScope
from gateway.errors import WritesFrozen
from gateway.ports import Store


class FreezeState:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._active: list[Freeze] = []
        self._generation = 0
        self._sending: dict[int, tuple[str, str, asyncio.Future[None]]] = {}
        self._ids = itertools.count()

    @property
    def active(self) -> list[Freeze]:
        return list(self._active)

    async def load(self) -> None:
        self._active = await self._store.active_freezes()

    async def check(self, upstream: str, agent: str) -> None:
        """The first check of a write, against the store (raises WritesFrozen).

        A read from the store also teaches this process about freezes engaged
        or released by other processes, unless this process changed them
        while the read was in flight.
        """
        generation = self._generation
        freezes = await self._store.active_freezes()
        if generation == self._generation:
            self._active = freezes
        _raise_if_frozen(covering(freezes, upstream, agent))
        _raise_if_frozen(covering(self._active, upstream, agent))

    @contextmanager
    def sending(self, upstream: str, agent: str) -> Iterator[None]:
        """The final check; the block runs while the write is on its way upstream."""
        _raise_if_frozen(covering(self._active, upstream, agent))
        token = next(self._ids)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sending[token] = (upstream, agent, done)
        try:
            yield
        finally:
            del self._sending[token]
            done.set_result(None)

    async def engage(self, freeze: Freeze) -> Freeze:
        stored = await self._store.engage_freeze(freeze)
        self._generation += 1
        if not any(f.scope == stored.scope and f.target == stored.target for f in self._active):
            self._active.append(stored)
        waiting = [done for up, agent, done in self._sending.values()
                   if covers(stored, up, agent)]
        if waiting:
            await asyncio.wait(waiting)
        return stored

    async def release(self, scope: FreezeScope, target: str | None, by: str, reason: str,
                      at: datetime) -> Freeze | None:
        released = await self._store.release_freeze(scope, target, by, reason, at)
        self._generation += 1
        self._active = [f for f in self._active if not (f.scope == scope and f.target == target)]
        return released


def _raise_if_frozen(freeze: Freeze | None) -> None:
    if freeze is not None:
        target = f" {freeze.target}" if freeze.target else ""
        raise WritesFrozen(f"writes are frozen ({freeze.scope.value}{target}): {freeze.reason}",
                           scope=freeze.scope.value, target=freeze.target)
