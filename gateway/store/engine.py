"""Database URLs and the SQLAlchemy engine for the admin side of the store.

Two backends, told apart by the URL: ``sqlite+aiosqlite:///./gateway.db``
(embedded) and ``postgresql+asyncpg://user@host/db``. Bare ``sqlite://`` and
``postgresql://`` are taken to mean those drivers.

SQLite needs help to behave like a server database. The file is put in WAL
mode at start (``hot.SqliteHotPath.connect``; readers then never block the
writer, and the mode sticks to the file). Every connection gets
``synchronous=NORMAL`` and a busy timeout (a locked database waits instead
of failing at once); the journal's intents are flushed to disk on their own
before their write is sent (``hot.SqliteHotPath.flush``). The sqlite3
module's own transaction handling is switched off and SQLAlchemy emits BEGIN
itself, so DDL is transactional and a connection carrying the
``IMMEDIATE`` execution option starts with ``BEGIN IMMEDIATE``: it takes the
write lock up front, which is what makes read-then-write (the audit chain,
one active freeze per scope) safe across processes.
"""

from __future__ import annotations

import array
import fcntl
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_FS_IOC_GETFLAGS = 0x80086601  # Linux: the inode's flags (lsattr)
_UNWRITABLE = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL
SQLITE_PRAGMAS = ("PRAGMA busy_timeout=5000", "PRAGMA synchronous=NORMAL")
IMMEDIATE = "gateway_sqlite_immediate"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def parse_url(database_url: str) -> URL:
    """The URL with its async driver, or ValueError for anything unsupported.

    >>> parse_url("postgresql://gw@db/gw").drivername
    'postgresql+asyncpg'
    """
    url = make_url(database_url)
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database URL {url.render_as_string()!r}: "
                         "use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB")
    url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database is not supported: name a file")
    return url


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def sqlite_path(url: URL) -> Path:
    return Path(url.database or "")


def asyncpg_dsn(url: URL) -> str:
    """The same PostgreSQL URL in the form asyncpg itself accepts."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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
        if self._identity() != self.identity:
            raise sqlite3.OperationalError(f"the database file {self.path} was replaced "
                                           "since it was opened")
        self.check_shm()

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


def create_engine(url: URL) -> AsyncEngine:
    if is_postgres(url):
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url, connect_args={"isolation_level": None})
    path = sqlite_path(url)
    event.listen(engine.sync_engine, "connect",
                 lambda connection, record: _sqlite_connect(connection, record, path))
    event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any, path: Path) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()
    record.info["file"] = SqliteFile(path)


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    file = connection.connection.info.get("file")
    if file is not None:
        if immediate:  # a write: into the file that is still the store
            file.check()
        else:  # a read touches the ``-shm`` mapping too
            file.check_shm()
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
