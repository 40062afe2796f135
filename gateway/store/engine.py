"""Database URLs and the SQLAlchemy engine for the admin side of the store.

Two backends, told apart by the URL: ``sqlite+aiosqlite:///./gateway.db``
(embedded) and ``postgresql+asyncpg://user@host/db``. Bare ``sqlite://`` and
``postgresql://`` are taken to mean those drivers.

A PostgreSQL URL may name several hosts, as libpq and asyncpg accept
(``postgresql+asyncpg://u:p@h1:5432,h2:5432/db``): a primary and its
standbys. Every connection to one of several hosts asks for
``target_session_attrs=read-write``, so it reaches the one that is primary
now, or fails (the store is then unavailable,
and writes are refused, until a primary answers again; a connection made
after a failover finds the promoted standby). SQLAlchemy takes several hosts
as ``?host=h1:5432&host=h2:5432``; ``read_url`` rewrites the libpq form to that.
Every connection is made by ``connect_primary``: one host at a time, each
given ``HOST_TIMEOUT`` (asyncpg's own timeout covers the whole list, so one
host that never answers, a primary whose machine vanished, would use it all
and the standby behind it would never be asked), the host that last answered
as primary first (after a failover every new connection would otherwise wait
out the vanished old primary first), and with TCP keepalives and
a TCP user timeout on its socket, so that a connection to a primary that
vanished without a word fails in seconds (``watch_peer``), not in the
kernel's quarter of an hour: the writes on it get 503, the pool connects again.

SQLite needs help to behave like a server database. The file is put in WAL
mode at start (``hot_sqlite.SqliteHotPath.connect``; readers then never block the
writer, and the mode sticks to the file). Every connection gets
``synchronous=NORMAL`` and a busy timeout (a locked database waits instead
of failing at once); the journal's intents are flushed to disk on their own
before their write is sent (``hot_sqlite.SqliteHotPath.flush``). The sqlite3
module's own transaction handling is switched off and SQLAlchemy emits BEGIN
itself, so DDL is transactional and a connection carrying the
``IMMEDIATE`` execution option starts with ``BEGIN IMMEDIATE``: it takes the
write lock up front, which is what makes read-then-write (the audit chain,
one active freeze per scope) safe across processes.

Writes go through an engine of their own (``create_engine(url, writer=True)``)
with one connection: the process's writers queue for it in the order they came
(waiting up to ``WRITER_QUEUE`` seconds for their turn). Each trying the lock
on a timer, twenty at once (approvals of one held call) took turns at random,
and one could lose every try for ``BUSY_TIMEOUT``. That connection has a zero
busy timeout: a ``BEGIN IMMEDIATE`` that finds another connection's lock (the
hot path's, another process's) is tried again here, the file checked before
every try (``_begin_immediate``), as the hot path does (``SqliteHotPath._waiting``).
SQLite's own busy handler retries inside ``sqlite3_step``, where no check runs:
a retry that had to record a new read mark (the WAL grew since anyone last
read it) wrote a ``-shm`` made immutable meanwhile, and the process died of
SIGBUS. Once the lock is taken, nothing in the transaction waits again.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import re
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

if TYPE_CHECKING:
    import asyncpg

_FS_IOC_GETFLAGS = 0x80086601  # Linux: the inode's flags (lsattr)
_UNWRITABLE = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL
BUSY_TIMEOUT = 5.0  # seconds a statement waits for another connection's lock on SQLite
WRITER_QUEUE = 30.0  # seconds a SQLite writer waits for the ones of its process ahead of it
SQLITE_PRAGMAS = (f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}", "PRAGMA synchronous=NORMAL")
WRITER_PRAGMAS = ("PRAGMA busy_timeout=0", "PRAGMA synchronous=NORMAL")  # waits: ours
# seconds between the tries of a statement that found the database locked: SQLite's own
# busy handler's pauses (sqliteDefaultBusyCallback), taken here so a check runs between,
# after three of 0.1-0.5 ms: the lock's usual holder is another gateway process's hot path,
# whose transactions take tens of microseconds (``--workers 2``, PATCH at 32 connections:
# 1.053x the req/s of starting at 1 ms, bench/ab_read.py --workers 2, 4 rounds)
PAUSES = (0.0001, 0.0002, 0.0005,
          0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)
IMMEDIATE = "gateway_sqlite_immediate"
HOST_TIMEOUT = 5.0  # seconds one host of several has to connect and say it is primary
PEER_SILENCE = 10  # seconds without an answer from the server before a connection is dead

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


_NETLOC = re.compile(r"^(?P<scheme>[^:/]+://)(?P<user>[^@/]*@)?(?P<hosts>[^/?#@]*,[^/?#@]*)"
                     r"(?P<rest>[/?#].*)?$", re.DOTALL)


def read_url(database_url: str) -> URL:
    """``make_url``, also for the libpq form of several hosts (``h1:5432,h2:5432``).

    >>> read_url("postgresql://gw@h1:5432,h2/gw").query["host"]
    ('h1:5432', 'h2:5432')
    """
    match = _NETLOC.match(database_url)
    if match is None:
        return make_url(database_url)
    hosts = tuple(h if ":" in h else f"{h}:5432" for h in match["hosts"].split(","))
    if not all(h.split(":")[0] for h in hosts):
        raise ValueError("a database URL with several hosts names an empty host")
    url = make_url(f"{match['scheme']}{match['user'] or ''}{match['rest'] or '/'}")
    return url.update_query_dict({"host": hosts})


def parse_url(database_url: str) -> URL:
    """The URL with its async driver, or ValueError for anything unsupported.

    PostgreSQL URLs with several hosts ask for the primary
    (``target_session_attrs=read-write``) unless they say otherwise. One host is
    taken as it is: a read-only server is then a store that cannot take a write
    (``SqlStore.ping``), as it always was.

    >>> parse_url("postgresql://gw@db/gw").drivername
    'postgresql+asyncpg'
    """
    url = read_url(database_url)
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database URL {url.render_as_string()!r}: "
                         "use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB")
    url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database is not supported: name a file")
    hosts = url.query.get("host")
    if is_postgres(url) and isinstance(hosts, tuple) and len(hosts) > 1 \
            and "target_session_attrs" not in url.query:
        url = url.update_query_dict({"target_session_attrs": "read-write"})
    return url


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def sqlite_path(url: URL) -> Path:
    return Path(url.database or "")


def asyncpg_dsn(url: URL) -> str:
    """The same PostgreSQL URL in the form asyncpg itself accepts (several hosts
    back in the netloc: asyncpg reads one ``host`` from the query).

    >>> asyncpg_dsn(parse_url("postgresql://gw:pw@h1:5432,h2:5433/gw"))
    'postgresql://gw:pw@h1:5432,h2:5433/gw?target_session_attrs=read-write'
    """
    hosts = url.query.get("host")
    url = url.set(drivername="postgresql")
    if not isinstance(hosts, tuple) or len(hosts) < 2:
        return url.render_as_string(hide_password=False)
    rendered = url.difference_update_query(["host"]).set(host="HOSTS", port=None)
    text = rendered.render_as_string(hide_password=False)
    return text.replace("@HOSTS/", "@" + ",".join(hosts) + "/", 1) if "@HOSTS/" in text \
        else text.replace("://HOSTS/", "://" + ",".join(hosts) + "/", 1)


class DriverErrors(NamedTuple):
    """asyncpg's exception classes the store tells apart, as tuples for ``except`` and
    ``isinstance``: all empty on SQLite, whose store never imports asyncpg (the fast
    lane runs where it is not installed, ``tests/test_fast_lane.py``)."""

    any: tuple[type[Exception], ...]  # the server's errors and the driver's own
    connection: tuple[type[Exception], ...]  # the server cannot be reached, or is going away
    unique: tuple[type[Exception], ...]  # a unique constraint refused the row


NO_DRIVER_ERRORS = DriverErrors((), (), ())


def driver_errors(url: URL) -> DriverErrors:
    """The ``DriverErrors`` of ``url``'s driver; for PostgreSQL this imports asyncpg.

    >>> driver_errors(parse_url("sqlite:///gw.db"))
    DriverErrors(any=(), connection=(), unique=())
    """
    if not is_postgres(url):
        return NO_DRIVER_ERRORS
    import asyncpg

    return DriverErrors(
        any=(asyncpg.PostgresError, asyncpg.InterfaceError),
        connection=(asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, asyncpg.exceptions.OperatorInterventionError),
        unique=(asyncpg.UniqueViolationError,))


_PRIMARY: dict[str, str] = {}  # a multi-host dsn -> the host that last answered as primary


async def connect_primary(dsn: str, **options: Any) -> asyncpg.Connection:
    """``asyncpg.connect`` (same arguments; asyncpg's pools call it so), trying the
    hosts of a multi-host ``dsn`` one at a time, each within ``HOST_TIMEOUT``: the one
    that last answered as primary first, then the others in the URL's order."""
    import asyncpg

    url = read_url(dsn)
    hosts = url.query.get("host")
    if not isinstance(hosts, tuple) or len(hosts) < 2:
        return watch_peer(await asyncpg.connect(dsn, **options))
    options["timeout"] = min(float(options.get("timeout", 60)), HOST_TIMEOUT)
    why: list[str] = []
    errors: list[BaseException] = []
    last = _PRIMARY.get(dsn)
    for host in sorted(hosts, key=lambda host: host != last):  # stable: the URL's order
        name, _, port = host.rpartition(":")
        single = url.difference_update_query(["host"]).set(host=name, port=int(port))
        try:
            connection = watch_peer(await asyncpg.connect(asyncpg_dsn(single), **options))
        except asyncpg.TargetServerAttributeNotMatched as exc:
            why.append(f"{host}: not the primary (a standby)")  # the next one
            errors.append(exc)
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
            # down, not answering, or starting: the next one
            why.append(f"{host}: {type(exc).__name__}: {exc}".strip().rstrip(":"))
            errors.append(exc)
        else:
            _PRIMARY[dsn] = host
            return connection
    raise NoPrimary("no primary among the store's hosts (" + "; ".join(why) + ")", errors)


class NoPrimary(ConnectionError):
    """None of a multi-host store's hosts is a primary that answers (a failover under
    way): the store is unavailable, as when one server is down (an ``OSError``, so
    every edge answers 503 with this message, ``diagnose.unavailable``). ``errors``:
    each host's, in order."""

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        super().__init__(message)
        self.errors = errors


def watch_peer(connection: asyncpg.Connection) -> asyncpg.Connection:
    """Keepalives after ``PEER_SILENCE / 2`` idle seconds, and a TCP user timeout of
    ``PEER_SILENCE``: a statement sent to a server that no longer answers (not even
    with a reset) fails then, instead of waiting for the kernel's retransmissions
    (~15 minutes). Linux options; elsewhere, and on Unix sockets, nothing changes."""
    sock = connection._transport.get_extra_info("socket")  # noqa: SLF001 (asyncpg's)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return connection
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", PEER_SILENCE // 2), ("TCP_KEEPINTVL", 2),
                        ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", PEER_SILENCE * 1000)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        sock.setsockopt(level, option, value)
    return connection


class SqliteFile:
    """The database file a connection opened, so that losing it is noticed.

    SQLite keeps writing to a file whose directory was removed, or that was
    replaced on disk: every write "succeeds" into a file nobody will read
    again. Before each write transaction the path must still name the file
    that was opened (one ``stat``, about a microsecond); else the write fails
    as the store being unavailable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = self._identity()
        self._shm: int | None = None  # a descriptor on the ``-shm`` file, to read its flags
        self._flags = sys.platform == "linux"  # False: the file system cannot tell

    def _identity(self) -> tuple[int, int]:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise sqlite3.OperationalError(f"the database file {self.path} is gone: "
                                           f"{exc.strerror}") from None
        return stat.st_dev, stat.st_ino

    def check(self) -> None:
        self.check_path()
        self.check_shm()

    def check_path(self) -> None:
        if self._identity() != self.identity:
            raise sqlite3.OperationalError(f"the database file {self.path} was replaced "
                                           "since it was opened")

    def check_shm(self) -> None:
        """SQLite maps the ``-shm`` file into memory; once that file cannot be written
        (immutable or append-only: ``chattr``), touching the mapping kills the process
        (SIGBUS). So it is looked at first (one ``ioctl``) and the transaction refused."""
        if not self._flags:
            return
        if self._shm is None:
            try:
                self._shm = os.open(f"{self.path}-shm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return  # not created yet: SQLite creates it writable
        flags = array.array("i", [0])
        try:
            fcntl.ioctl(self._shm, _FS_IOC_GETFLAGS, flags, True)
        except OSError:
            self._flags = False  # a file system without these flags
            return
        if flags[0] & _UNWRITABLE:
            raise sqlite3.OperationalError(f"{self.path}-shm cannot be written (immutable or "
                                           "append-only); the store refuses transactions")

    def __del__(self) -> None:
        if getattr(self, "_shm", None) is not None:
            os.close(self._shm)  # type: ignore[arg-type]


def create_engine(url: URL, writer: bool = False) -> AsyncEngine:
    """The admin side's engine; ``writer``: SQLite's for writes (zero busy timeout, its
    ``BEGIN IMMEDIATE`` waited for here), which the caller gives the ``IMMEDIATE``
    option (on PostgreSQL the caller shares one engine)."""
    if is_postgres(url):
        dsn = asyncpg_dsn(url)
        return create_async_engine(url, pool_pre_ping=True,
                                   async_creator=lambda: connect_primary(dsn))
    # the writers' one connection: they queue for it (an asyncio queue, first come first
    # served), and only it waits for the lock (``_begin_immediate``)
    queue = {"pool_size": 1, "max_overflow": 0, "pool_timeout": WRITER_QUEUE} if writer else {}
    engine = create_async_engine(url, connect_args={"isolation_level": None}, **queue)
    path = sqlite_path(url)
    pragmas = WRITER_PRAGMAS if writer else SQLITE_PRAGMAS
    event.listen(engine.sync_engine, "connect",
                 lambda connection, record: _sqlite_connect(connection, record, path, pragmas))
    event.listen(engine.sync_engine, "begin", _sqlite_begin)
    event.listen(engine.sync_engine, "before_cursor_execute", _sqlite_statement)
    event.listen(engine.sync_engine, "commit", _sqlite_statement)  # COMMIT writes it too
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any, path: Path,
                    pragmas: tuple[str, ...]) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in pragmas:
        cursor.execute(pragma)
    cursor.close()
    record.info["file"] = SqliteFile(path)


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    file = connection.connection.info.get("file")
    if immediate:
        _begin_immediate(connection, file)
    else:
        connection.exec_driver_sql("BEGIN")


def _begin_immediate(connection: Any, file: SqliteFile | None) -> None:
    """``BEGIN IMMEDIATE`` tried until it takes the write lock, up to ``BUSY_TIMEOUT``:
    the path checked before every try (a write goes into the file that is still the
    store; the ``-shm`` is checked with every statement, ``_sqlite_statement``), and
    SQLite's pauses between, slept on a worker thread (the loop serves on)."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    for pause in chain((0.0,), pauses(deadline)):
        if pause:
            await_only(asyncio.to_thread(time.sleep, pause))
        if file is not None:
            file.check_path()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if not busy(exc.orig) or time.monotonic() >= deadline:
                raise
    raise AssertionError("unreachable: the pauses never end")


def pauses(deadline: float) -> Iterator[float]:
    """The seconds to sleep before each next try of a statement that found the database
    locked (``PAUSES``, then its last for ever), none past ``deadline`` (monotonic)."""
    for pause in chain(PAUSES, repeat(PAUSES[-1])):
        yield max(0.0, min(pause, deadline - time.monotonic()))


def busy(exc: BaseException | None) -> bool:
    """Whether SQLite refused for another connection's lock (tried again, not failed)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _sqlite_statement(connection: Any, *_: Any) -> None:
    """Every statement, reads included, and the COMMIT may touch the ``-shm``
    mapping, and a transaction's statements are spread over awaits and a thread
    hop: the file is looked at right before each one, not once at ``BEGIN``, so
    that one turned unwritable mid-transaction fails the next statement instead
    of killing the process."""
    file = connection.connection.info.get("file")
    if file is not None:
        file.check_shm()
