"""The push channel carries hints, never state (issue 17 item 4).

Anyone who reaches the bus can speak on it: on PostgreSQL a role with
nothing but CONNECT on the database can ``pg_notify('gateway_bus', ...)``; on
SQLite a process can send a datagram to a member's socket. Forged and
replayed messages must not create, keep or drop a freeze: each process's
view is whatever the store holds. Two real processes' worth of state (two
``SqlStore``s and their buses on one database), over both backends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.model import Freeze, FreezeScope, utcnow
from gateway.errors import WritesFrozen
from gateway.services.killswitch import FreezeState
from gateway.store.bus import CHANNEL, PgBus, SocketBus
from gateway.store.engine import asyncpg_dsn
from gateway.store.sql import SqlStore

HUGE = 1_000_000_000_000_000


class Forger:
    """Speaks on the bus of ``store_url`` without being a member of it."""

    def __init__(self, bus: PgBus | SocketBus, dsn: str | None) -> None:
        self._bus = bus
        self._dsn = dsn
        self.role: str | None = None

    async def __aenter__(self) -> Forger:
        import asyncpg  # the PostgreSQL rows alone need the driver
        if self._dsn is not None:  # a role that may only CONNECT
            self.role = f"forger_{uuid.uuid4().hex[:12]}"
            admin = await asyncpg.connect(self._dsn)
            try:
                database = await admin.fetchval("SELECT current_database()")
                await admin.execute(f'CREATE ROLE "{self.role}" LOGIN')
                await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{self.role}"')
            finally:
                await admin.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncpg  # the PostgreSQL rows alone need the driver
        if self.role is not None:
            admin = await asyncpg.connect(self._dsn)
            try:
                database = await admin.fetchval("SELECT current_database()")
                await admin.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{self.role}"')
                await admin.execute(f'DROP ROLE "{self.role}"')
            finally:
                await admin.close()

    async def send(self, message: dict[str, Any]) -> None:
        import asyncpg  # the PostgreSQL rows alone need the driver
        payload = json.dumps(message)
        if isinstance(self._bus, PgBus):
            assert self._dsn is not None and self.role is not None
            forger = await asyncpg.connect(self._dsn, user=self.role)
            try:
                await forger.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            finally:
                await forger.close()
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            for path in self._bus.directory.glob("*.sock"):
                sock.sendto(payload.encode(), str(path))


class Heard:
    """A process's state, counting (and keeping) the messages its bus delivers."""

    def __init__(self, state: FreezeState) -> None:
        self.state = state
        self.messages: list[dict[str, Any]] = []
        deliver = state._heard

        def counting(message: dict[str, Any]) -> None:
            self.messages.append(message)
            deliver(message)
        state._heard = counting  # type: ignore[method-assign]  # before start: the bus's

    async def until(self, count: int) -> None:
        """Until the bus has delivered ``count`` messages and the re-reads of the store
        they asked for are back (a message is heard before its re-read ends)."""
        async with asyncio.timeout(10):
            while len(self.messages) < count:
                await asyncio.sleep(0.005)
            while (reading := self.state._reading) is not None and not reading.done():
                await asyncio.wait([reading])


@pytest.fixture
async def processes(store: SqlStore, store_url: str) -> AsyncIterator[list[Heard]]:
    other = SqlStore(store_url)
    await other.start()
    heard = [Heard(FreezeState(s, s.bus(), engage_wait=1.0)) for s in (store, other)]
    for process in heard:
        await process.state.start()
    yield heard
    for process in heard:
        await process.state.stop()
    await other.close()


@pytest.fixture
async def forger(store: SqlStore, processes: list[Heard]) -> AsyncIterator[Forger]:
    bus = processes[0].state._bus  # started: on SQLite, its directory holds the sockets
    assert isinstance(bus, PgBus | SocketBus)
    dsn = asyncpg_dsn(store.url) if isinstance(bus, PgBus) else None
    async with Forger(bus, dsn) as speaking:
        yield speaking


def engage_message(freeze: Freeze, generation: int) -> dict[str, Any]:
    return {"type": "engage", "id": uuid.uuid4().hex, "generation": generation,
            "freeze": {**freeze.to_json(), "id": freeze.id}, "wait": 0.5,
            "from": "forger", "to": None}


async def may_send(state: FreezeState) -> bool:
    """Whether ``state`` lets a write to crm by bot go now (the write path's last check)."""
    try:
        async with state.sending("crm", "bot"):
            return True
    except WritesFrozen:
        return False


async def holds(process: Heard, reasons: list[str]) -> None:
    """``process`` holds exactly the freezes the store holds (``reasons``), now and
    after its next confirmed read of the store."""
    state = process.state
    for _ in range(2):
        assert [f.reason for f in state.active] == reasons
        assert await may_send(state) is (not reasons), \
            f"writes {'go' if not reasons else 'are frozen'} with freezes {state.active}"
        await state.confirm()


def freeze(reason: str = "forged") -> Freeze:
    return Freeze(FreezeScope.GLOBAL, None, reason, "mallory", utcnow())


async def test_a_forged_engage_freezes_nothing(processes: list[Heard], forger: Forger) -> None:
    await forger.send(engage_message(freeze(), HUGE))
    for process in processes:
        await process.until(1)
        await holds(process, [])


async def test_a_forged_newer_engage_of_a_real_freeze_ends_with_its_release(
        processes: list[Heard], forger: Forger) -> None:
    one, two = processes
    engaged = await one.state.engage(freeze("real"))
    await two.until(1)
    await holds(two, ["real"])
    await forger.send(engage_message(engaged.freeze, HUGE))  # the same freeze, "newer"
    await two.until(2)
    await one.state.release(FreezeScope.GLOBAL, None, "alice", "done", utcnow())
    await two.until(3)
    for process in processes:
        await holds(process, [])


async def test_a_replayed_engage_freezes_nothing(processes: list[Heard],
                                                 forger: Forger) -> None:
    one, two = processes
    await one.state.engage(freeze("real"))
    await one.state.release(FreezeScope.GLOBAL, None, "alice", "done", utcnow())
    await two.until(2)
    [original] = [m for m in two.messages if m.get("type") == "engage"]
    await forger.send(original)
    await forger.send({**original, "generation": HUGE})
    await one.until(2)
    await two.until(4)
    for process in processes:
        await holds(process, [])


async def test_a_forged_release_releases_nothing(processes: list[Heard],
                                                 forger: Forger) -> None:
    one, two = processes
    await one.state.engage(freeze("real"))
    await forger.send({"type": "release", "generation": HUGE, "from": "forger", "to": None})
    await one.until(1)
    await two.until(2)
    for process in processes:
        await holds(process, ["real"])
