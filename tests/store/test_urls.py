"""Database URLs: several PostgreSQL hosts (the libpq form), and the primary asked for."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store import engine
from gateway.store.diagnose import safe_url
from gateway.store.engine import asyncpg_dsn, parse_url
from gateway.store.sql import SqlStore

CASES = [
    ("postgresql+asyncpg://gw:s3cret@h1:5432,h2:5433/gw",
     "postgresql://gw:s3cret@h1:5432,h2:5433/gw?target_session_attrs=read-write"),
    ("postgresql://gw@h1,h2/gw",  # a host without a port: 5432, as libpq
     "postgresql://gw@h1:5432,h2:5432/gw?target_session_attrs=read-write"),
    ("postgresql://h1:1,h2:2/gw?ssl=disable",
     "postgresql://h1:1,h2:2/gw?ssl=disable&target_session_attrs=read-write"),
    ("postgresql+asyncpg://gw@db/gw", "postgresql://gw@db/gw"),  # one host: as it is
    ("postgresql://gw@h1:1,h2:2/gw?target_session_attrs=any",  # the URL's own choice stays
     "postgresql://gw@h1:1,h2:2/gw?target_session_attrs=any"),
]


@pytest.mark.parametrize(("url", "dsn"), CASES)
def test_asyncpg_gets_every_host_and_asks_for_the_primary(url: str, dsn: str) -> None:
    assert asyncpg_dsn(parse_url(url)) == dsn


def test_sqlalchemy_gets_the_host_list_and_the_session_attributes() -> None:
    engine = create_async_engine(parse_url("postgresql://gw:pw@h1:5432,h2:5433/gw"))
    _, options = engine.dialect.create_connect_args(engine.url)
    assert (options["host"], options["port"]) == (["h1", "h2"], [5432, 5433])
    assert options["target_session_attrs"] == "read-write"


def test_the_password_stays_hidden_with_several_hosts() -> None:
    shown = safe_url("postgresql+asyncpg://gw:s3cret@h1:5432,h2:5432/gw")
    assert "s3cret" not in shown and "h1" in shown and "h2" in shown


def test_an_empty_host_in_the_list_is_refused() -> None:
    with pytest.raises(ValueError, match="empty host"):
        parse_url("postgresql://gw@h1:5432,:5433/gw")


def test_sqlite_urls_are_untouched() -> None:
    assert parse_url("sqlite:///./gateway.db").render_as_string() == \
        "sqlite+aiosqlite:///./gateway.db"


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_a_host_that_never_answers_does_not_hide_the_primary_behind_it(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel completes its handshakes; nothing ever answers on it (a vanished machine
    # behind a black-holing network looks the same): asyncpg's one timeout for the whole
    # list of hosts would be spent on it, and the primary behind never asked
    monkeypatch.setattr(engine, "HOST_TIMEOUT", 0.5)
    with silent_first(store_url) as (_, url):
        store = SqlStore(url)
        await store.start()  # the hot path's pools, the migrations over SQLAlchemy
        try:
            assert await store.ping()
            bus = store.bus()
            await bus.start(lambda message: None)  # the listening connection
            await bus.close()
        finally:
            await store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_connections_give_up_on_a_silent_server_in_seconds(store_url: str) -> None:
    """What makes a write on a connection to a vanished primary fail (503) instead of
    waiting out the kernel's retransmissions: keepalives and a TCP user timeout."""
    connection = await engine.connect_primary(asyncpg_dsn(parse_url(store_url)))
    try:
        sock = connection._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == \
            engine.PEER_SILENCE // 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == \
            engine.PEER_SILENCE * 1000
    finally:
        await connection.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_the_host_that_answered_as_primary_is_asked_first_next_time(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failover the old primary is first in the list and may never answer (its
    machine vanished): every new connection of the pools waited ``HOST_TIMEOUT`` on it
    before it asked the new primary. Now the host that answered last is asked first."""
    monkeypatch.setattr(engine, "HOST_TIMEOUT", 0.5)
    with silent_first(store_url) as (silent, url):
        dsn = asyncpg_dsn(parse_url(url))
        for asked_the_silent_one in (1, 0, 0):
            connection = await engine.connect_primary(dsn)
            await connection.close()
            assert _handshakes(silent) == asked_the_silent_one


@contextmanager
def silent_first(store_url: str) -> Iterator[tuple[socket.socket, str]]:
    """A listening socket nobody answers on (the kernel completes its handshakes: a
    vanished machine behind a black-holing network looks the same), and a URL naming
    it first, then the real server."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        real = make_url(store_url)
        login = real.username + (f":{real.password}" if real.password else "")
        yield silent, (f"postgresql+asyncpg://{login}@127.0.0.1:{silent.getsockname()[1]},"
                       f"{real.host}:{real.port or 5432}/{real.database}")


def _handshakes(listening: socket.socket) -> int:
    """The connections the kernel completed on ``listening`` since the last call."""
    listening.setblocking(False)
    count = 0
    while True:
        try:
            accepted, _ = listening.accept()
        except BlockingIOError:
            return count
        accepted.close()
        count += 1
