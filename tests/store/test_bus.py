"""The bus between processes sharing a store, on every backend: who is listening, who
hears what, and what becomes of a member that died."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.model import Freeze, FreezeScope, utcnow
from gateway.store.bus import SocketBus
from gateway.store.sql import SqlStore


class Member:
    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.bus = store.bus()
        self.heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.heard.get(), timeout=10)


@pytest.fixture
async def members(store: SqlStore, store_url: str) -> AsyncIterator[list[Member]]:
    others = [SqlStore(store_url) for _ in range(2)]
    for other in others:
        await other.start()
    started = [Member(s) for s in (store, *others)]
    for member in started:
        await member.bus.start(member.heard.put_nowait)
    yield started
    for member in started:
        await member.bus.close()
    for other in others:
        await other.close()


async def test_every_member_hears_a_message_but_its_sender(members: list[Member]) -> None:
    a, b, c = members
    assert await a.bus.members() == {b.bus.member, c.bus.member}
    await a.bus.publish({"type": "engage", "n": 1})
    for member in (b, c):
        assert await member.next() == {"type": "engage", "n": 1, "from": a.bus.member,
                                       "to": None}
    await b.bus.publish({"type": "answer"}, to=a.bus.member)  # for a alone
    await c.bus.publish({"type": "after"})  # sent after the answer, heard after it
    assert (await a.next())["type"] == "answer"
    assert (await a.next())["type"] == "after"
    assert (await b.next())["type"] == "after"
    assert a.heard.empty() and b.heard.empty() and c.heard.empty()


async def test_a_member_that_left_is_no_longer_asked(members: list[Member]) -> None:
    a, b, c = members
    await c.bus.close()
    async with asyncio.timeout(10):  # PostgreSQL: until its session has ended
        while await a.bus.members() != {b.bus.member}:
            await asyncio.sleep(0.01)


async def test_a_process_is_gone_only_once_nothing_of_it_is_connected(
        members: list[Member]) -> None:
    """``gone``: a process whose bus closed but whose store is still open (on PostgreSQL
    its hot path's sessions, named after it) is not gone; closed entirely, it is."""
    a, b, c = members
    assert await a.bus.gone({b.bus.member, c.bus.member, "never-was"}) == {"never-was"}
    await c.bus.close()
    if not isinstance(c.bus, SocketBus):
        assert await a.bus.gone({c.bus.member}) == set()  # its sessions are still there
        await c.store.close()
    async with asyncio.timeout(10):  # PostgreSQL: until its sessions have ended
        while await a.bus.gone({b.bus.member, c.bus.member}) != {c.bus.member}:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_nobody_is_gone_just_after_the_server_changed(members: list[Member]) -> None:
    """A restart or a failover drops every process's sessions; the live ones connect
    again within moments, and are not taken for dead meanwhile."""
    a, _, _ = members
    assert await a.bus.gone({"never-was"}) == {"never-was"}
    a.bus._server = "another server"  # type: ignore[attr-defined]  # as after a failover
    assert await a.bus.gone({"never-was"}) == set()
    a.bus._trust_from = 0.0  # type: ignore[attr-defined]  # the grace over
    assert await a.bus.gone({"never-was"}) == {"never-was"}


async def test_the_socket_of_a_process_that_died_is_removed(tmp_path: Any) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
    await store.start()
    bus = store.bus()
    assert isinstance(bus, SocketBus)
    await bus.start(lambda message: None)
    try:
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never unlinked
        dead.bind(str(bus.directory / "999999-deadbeef.sock"))
        dead.close()
        assert (bus.directory / "999999-deadbeef.sock").exists()
        assert await bus.members() == set()
        assert not (bus.directory / "999999-deadbeef.sock").exists()
    finally:
        await bus.close()
        await store.close()
    assert not bus.directory.exists()  # the last one out removes the directory


# The SQLite bus's directory (issue 17 item 5) -----------------------------------------
NOBODY = 65534


async def sqlite_bus(tmp_path: Any) -> tuple[SqlStore, SocketBus]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
    await store.start()
    bus = store.bus()
    assert isinstance(bus, SocketBus)
    return store, bus


async def test_another_user_cannot_take_the_bus_directory_first(tmp_path: Any) -> None:
    # what the directory's name used to be: derived from the database path alone
    key = hashlib.sha256(str((tmp_path / "gw.db").resolve()).encode()).hexdigest()[:16]
    taken = Path(tempfile.gettempdir()) / f"gateway-bus-{key}"
    taken.mkdir(mode=0o777)
    os.chown(taken, NOBODY, NOBODY)
    store, bus = await sqlite_bus(tmp_path)
    try:
        await bus.start(lambda message: None)
        info = os.lstat(bus.directory)
        assert bus.directory != taken
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.getuid(), 0o700)
        other = SocketBus(tmp_path / "gw.db", "other-member")  # a second process joins it
        await other.start(lambda message: None)
        assert other.directory == bus.directory
        assert await bus.members() == {"other-member"}
        await other.close()
    finally:
        await bus.close()
        await store.close()
        taken.rmdir()
    assert not bus.directory.exists()  # the last one out removed it


@pytest.mark.parametrize("whose", ["directory", "link"])
async def test_a_bus_directory_another_user_holds_is_refused(tmp_path: Any, whose: str) -> None:
    theirs = Path(tempfile.mkdtemp(prefix="theirs-"))
    link = tmp_path / ".gw.db.bus"
    os.symlink(theirs, link)
    if whose == "directory":
        os.chown(theirs, NOBODY, NOBODY)
    else:
        os.lchown(link, NOBODY, NOBODY)
    store, bus = await sqlite_bus(tmp_path)
    try:
        with pytest.raises(PermissionError, match="refusing"):
            await bus.start(lambda message: None)
        assert list(theirs.iterdir()) == []  # nothing was bound in it
    finally:
        await store.close()
        theirs.rmdir()


async def test_an_engage_is_announced_by_its_commit_where_the_store_can(
        members: list[Member]) -> None:
    a, b, c = members
    freeze = Freeze(FreezeScope.GLOBAL, None, "stop", "alice", utcnow(), id="f-1")
    message = {"type": "engage", "id": "k-1", "generation": -1, "freeze": {"id": "f-1"},
               "wait": 1.5}
    notice = a.bus.at_commit(message)
    change = await a.store.engage(freeze, notice)
    if notice is None:  # no NOTIFY with the commit (SQLite): the engage publishes it
        assert not change.announced
        return
    assert change.announced
    for member in (b, c):
        heard = await member.next()
        assert {**heard, "wait": None} == {**message, "generation": change.generation,
                                           "wait": None, "from": a.bus.member, "to": None}
        assert 0 <= heard["wait"] <= 1.5  # less what the engage waited for its locks
    again = await a.store.engage(Freeze(FreezeScope.GLOBAL, None, "again", "bob", utcnow(),
                                        id="f-2"), a.bus.at_commit({**message, "id": "k-2"}))
    assert (again.freeze, again.announced) == (freeze, False)  # nothing new: not announced
    await c.bus.publish({"type": "after"})
    assert (await b.next())["type"] == "after"
