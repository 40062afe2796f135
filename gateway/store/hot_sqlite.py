"""The hot path on SQLite: one connection on the event loop's thread (``gateway.store.hot``)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.model import AuditItem, AuditRecord, Freeze
from gateway.ports import FreezeChange, Notice
from gateway.store import codec
from gateway.store import killswitch as ks
from gateway.store.audit import WRITE_LOCK, append_in
from gateway.store.bus import SocketBus
from gateway.store.engine import BUSY_TIMEOUT, SQLITE_PRAGMAS, SqliteFile, busy, pauses
from gateway.store.hot import Tx

log = logging.getLogger("gateway.store")
# a flush that takes less than this (moving average) runs on the loop's thread (``flush``)
INLINE_FLUSH = 0.001
_T = TypeVar("_T")
_PROBE = "UPDATE alembic_version SET version_num = version_num"


class _SqliteTx:
    """Runs each statement inline: the transaction holds the write lock for
    microseconds, never across an await of anything else."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._connection.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return self._connection.execute(sql, args).fetchall()


class SqliteHotPath:
    """SQLite's hot path, run on the event loop's own thread.

    A WAL-mode insert takes tens of microseconds; handing it to a worker
    thread cost more than the statement itself (measured again for issue 9:
    40-45 us inline, 100-130 us through ``asyncio.to_thread``, and 8 us per
    row when 32 share one transaction, which is what group commit buys). So
    each statement is first tried inline with a zero busy timeout. If another
    connection holds the write lock (an operator's transaction, another
    process), blocking the loop to wait would also stall the holder when it
    lives on this loop, so only then does the statement move to a worker
    thread that tries it again until the normal busy timeout has passed
    (``_waiting``), checking the file before every try.

    Commits do not wait for the disk (``synchronous=NORMAL``: in WAL mode a
    crash of the process loses nothing, a crash of the machine may lose the
    last commits). What must survive the machine, an intent before its write
    is sent, asks for ``flush``: one ``fdatasync`` of the WAL, which is what
    ``synchronous=FULL`` does inside every commit, but outside the write lock,
    so neither this process's audit and outcome writes nor another process's
    intents wait behind it, and once per batch of intents (group commit). A
    fast flush runs on the loop's thread, a slow disk's on a worker thread,
    where the loop serves other calls meanwhile (``flush``). ``fsync=False``
    (setting ``journal_fsync``) skips it: for measuring what it costs, not for
    production.
    """

    def __init__(self, connection: sqlite3.Connection, file: SqliteFile,
                 fsync: bool = True) -> None:
        self._connection = connection
        self._file = file  # every write first checks the path still names it
        self._lock = asyncio.Lock()
        self.fsync = fsync
        self._wal: int | None = None  # the WAL's descriptor (``_log``)
        self._failed: OSError | None = None  # a flush failed: none is trusted again
        self._flush_time = 0.0  # seconds, a moving average of the flushes (``flush``)

    @classmethod
    async def connect(cls, path: Path, fsync: bool = True) -> SqliteHotPath:
        """Open the connection, putting the file in WAL mode if it is not yet."""
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in SQLITE_PRAGMAS:
                connection.execute(pragma)
            await _enable_wal(connection)
            connection.execute("PRAGMA busy_timeout=0")
            file = SqliteFile(path)
        except BaseException:
            connection.close()
            raise
        return cls(connection, file, fsync)

    async def flush(self) -> None:
        """On the loop's own thread while flushes are fast, else on a worker thread.

        Handing the ``fdatasync`` to a thread and back costs the loop more than
        a fast disk takes to flush: on the 2-core bench machine a bare
        ``fdatasync`` took 0.23 ms at p50 and the hand-off made it 0.63 ms of a
        PATCH's p50; as here, the PATCH's p50 fell 0.40 ms at one connection
        and its CPU 13% at 32 (paired A/B, ``bench/README.md``).
        But the loop serves every other call, the engage included, and does
        nothing while it flushes: once the flushes' moving average exceeds
        ``INLINE_FLUSH`` (a slow or network disk), they go to a thread, and
        come back when the disk is fast again. The WAL's descriptor is opened
        once (``_log``): one system call per flush, not three."""
        if not self.fsync:
            return
        self._raise_if_failed()
        try:
            if self._flush_time < INLINE_FLUSH:
                took = _sync(self._log(), self._file.path)
            else:
                took = await asyncio.to_thread(_sync, self._log(), self._file.path)
            self._flush_time += (took - self._flush_time) / 8
        except OSError as exc:
            # Not retried, ever: after a failed writeback Linux may drop the dirty pages
            # and report the error once, so a later fdatasync can succeed with the rows
            # it was for lost (PostgreSQL's "fsyncgate", 2018). Every intent from now on
            # fails (503 journal_unavailable) until the gateway is restarted and reads
            # back what the file really holds.
            if self._failed is None:
                self._failed = exc
                log.critical("the SQLite journal's flush failed (%s): no write is sent "
                             "until the gateway is restarted", exc)
            raise

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise OSError(self._failed.errno, "an earlier flush of the journal failed "
                          f"({self._failed.strerror}); restart the gateway") from self._failed

    def _log(self) -> int | None:
        """A descriptor on the WAL, opened at the first flush that finds one. SQLite
        removes the WAL only when the last connection to the database closes, and
        this one is open until ``close``, so the descriptor names the WAL SQLite
        writes for as long as it lives (even should the path be unlinked)."""
        if self._wal is None:
            try:
                self._wal = os.open(f"{self._file.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
        return self._wal

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        return await self._run(lambda: self._connection.execute(sql, args).rowcount)

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        return await self._run(lambda: self._connection.execute(sql, args).fetchall(),
                               self._file.check_shm)

    async def _run(self, statement: Callable[[], _T],
                   check: Callable[[], None] | None = None) -> _T:
        """``statement`` under the lock, after ``check`` (by default: the path still
        names the file and its ``-shm`` can be written). The check is made once the
        lock is held, right before SQLite touches the file: made before waiting for
        the lock, it would leave the wait for the file to turn unwritable in."""
        async with self._lock:
            (check or self._file.check)()
            try:
                return statement()
            except sqlite3.OperationalError as exc:
                if not busy(exc):
                    raise
            return await asyncio.to_thread(self._waiting, statement,
                                           check or self._file.check)

    @asynccontextmanager
    async def transaction(self, locks: Sequence[int] = (), durable: bool = True,
                          ) -> AsyncIterator[Tx]:
        async with self._lock:
            self._file.check()
            begin = self._connection.execute
            try:
                begin("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not busy(exc):
                    raise
                await asyncio.to_thread(self._waiting, lambda: begin("BEGIN IMMEDIATE"),
                                        self._file.check)
            try:
                yield _SqliteTx(self._connection)
                self._file.check_shm()  # COMMIT writes the mapping: looked at again
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    async def insert_intents(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """Each intent an ``INSERT ... WHERE NOT EXISTS`` (a freeze covers it), the
        batch in one transaction; then one flush for those that went in. A batch
        asks for an active freeze once, under the write lock an engage needs too:
        with none, its rows go in by one ``executemany`` of plain inserts."""
        if len(rows) == 1:
            counts = [await self.execute(ks.INSERT_INTENT_UNLESS_FROZEN,
                                         ks.unless_frozen_args(rows[0]))]
        else:
            counts = await self._run(lambda: self._intents(rows))
        if any(counts):
            await self.flush()  # on disk before any of these writes is sent
        return [count == 1 for count in counts]

    def _intents(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        def work() -> list[int]:
            execute = self._connection.execute
            if execute(ks.ANY_ACTIVE_FREEZE).fetchone() is None:
                self._connection.executemany(ks.INSERT_INTENT, rows)
                return [1] * len(rows)
            return [execute(ks.INSERT_INTENT_UNLESS_FROZEN, ks.unless_frozen_args(row)).rowcount
                    for row in rows]
        return self._immediate(work)

    def _immediate(self, work: Callable[[], _T]) -> _T:
        """``work`` in one ``BEGIN IMMEDIATE`` transaction on this thread: committed,
        or rolled back if it raises."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            done = work()
            self._file.check_shm()  # COMMIT writes the mapping: looked at again
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")
        return done

    async def update_outcomes(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        return [count == 1 for count in await self.each(codec.UPDATE_OUTCOME, rows)]

    async def append_audit(self, items: Sequence[AuditItem], durable: bool = True,
                           ) -> list[AuditRecord]:
        async with self.transaction((WRITE_LOCK,), durable) as tx:
            return await append_in(tx, list(items))

    async def engage(self, freeze: Freeze, announce: Notice | None = None) -> FreezeChange:
        """Inline, in one short transaction: an engage must not queue behind the stream
        of journal writes it is about to stop. (SQLite has no NOTIFY: ``announce`` is
        not sent, the caller publishes on the bus.)"""
        async with self.transaction(ks.ENGAGE_LOCKS) as tx:
            return await ks.engage_in(tx, freeze)

    async def warm(self) -> None:
        """Nothing to warm: statements run inline on the one connection."""

    async def warm_engage(self) -> None:
        """Nothing to warm: the engage runs inline on the one connection."""

    async def probe(self) -> None:
        """SQLite commits a write of nothing without touching the file: its probe
        rewrites a row nobody watches, so a database or WAL that cannot be written
        fails it (and so does a path that no longer names the file, ``SqliteFile``)."""
        self._raise_if_failed()
        async with self.transaction() as tx:
            await tx.execute(_PROBE)

    def bus(self, member: str) -> SocketBus:
        return SocketBus(self._file.path, member)

    async def each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[int]:
        """``sql`` once per row, all in one write transaction; the rows each touched.

        ``BEGIN IMMEDIATE`` takes the database's write lock first, so what the
        statements read is what they write over: no other writer, in any
        process, commits in between. One row is one statement, its own
        transaction: as safe (in WAL mode a statement that read a snapshot some
        other writer has since moved past fails as busy instead of writing) and
        a third of the calls.
        """
        if len(rows) == 1:
            return [await self.execute(sql, rows[0])]
        return await self._run(lambda: self._immediate(
            lambda: [self._connection.execute(sql, row).rowcount for row in rows]))

    @staticmethod
    def _waiting(statement: Callable[[], _T], check: Callable[[], None]) -> _T:
        """``statement`` tried again while it finds the database locked, up to
        ``BUSY_TIMEOUT``, with ``check`` before every try.

        Not SQLite's busy timeout: it retries inside ``sqlite3_step``, where no check
        runs, so a ``-shm`` made unwritable while this waited for another process's
        lock was touched by the retry that got it, and the process died of SIGBUS.
        Each try keeps the zero busy timeout; the pauses between are SQLite's own."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        for pause in pauses(deadline):
            time.sleep(pause)
            check()
            try:
                return statement()
            except sqlite3.OperationalError as exc:
                if not busy(exc) or time.monotonic() >= deadline:
                    raise
        raise AssertionError("unreachable: the pauses never end")

    async def close(self) -> None:
        async with self._lock:
            self._connection.close()
            if self._wal is not None:
                os.close(self._wal)
                self._wal = None


def _sync(fd: int | None, path: Path) -> float:
    """Flush the WAL; the seconds it took."""
    started = time.perf_counter()
    if fd is None:
        _sync_log(path)
    else:
        os.fdatasync(fd)
    return time.perf_counter() - started


def _sync_log(path: Path) -> None:
    """``fdatasync`` the WAL beside ``path`` (any descriptor of a file flushes all of
    its pages). With no WAL file left (the last connection checkpointed and removed
    it), everything committed is in the database file itself: flush that instead."""
    try:
        fd = os.open(f"{path}-wal", os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


async def _enable_wal(connection: sqlite3.Connection, attempts: int = 20) -> None:
    """Switch the file to WAL, retrying: the switch needs the file to itself and,
    unlike other locks, fails at once instead of waiting out the busy timeout
    (two processes opening a new database together both hit this)."""
    for attempt in range(1, attempts + 1):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.005 * attempt)
