"""The hot path on PostgreSQL: two asyncpg pools (``gateway.store.hot``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from gateway.core.audit import canonical_head
from gateway.core.model import AuditItem, AuditRecord, Freeze, FreezeScope, iso, new_id, utcnow
from gateway.group_commit import settle
from gateway.ports import FreezeChange, Notice
from gateway.store import codec
from gateway.store import killswitch as ks
from gateway.store.bus import SESSION_PREFIX, PgBus
from gateway.store.engine import connect_primary
from gateway.store.hot import Tx, numbered

if TYPE_CHECKING:  # imported when a PostgreSQL store connects: SQLite never loads it
    import asyncpg

log = logging.getLogger("gateway.store")
_APPEND_AUDIT = "SELECT * FROM gateway_audit_append($1, $2, $3, $4, $5)"  # migration 0019
_PROBE = "UPDATE killswitch SET generation = generation WHERE 1 = 0"  # a write, of nothing
_WRITE = "SELECT * FROM gateway_journal_write($1, $2, $3, $4, $5, $6, $7)"  # migration 0022
_OUTCOMES = ("UPDATE journal AS j SET "  # a batch of outcomes alone, as 0022's rows
             + ", ".join(f'"{c}" = v."{c}"' for c in codec.OUTCOME_COLUMNS)
             + " FROM unnest($1::journal_outcome[]) AS v WHERE j.id = v.id RETURNING j.id")
RIDE = 0.002  # how long outcomes wait for an intents' call to ride on before going alone
_Columns = tuple[list[str], ...]  # an audit batch: at, actor, action, detail, head columns


class PostgresHotPath:
    """Two asyncpg pools: one for what must be durable when it returns (intents, and
    the outcomes that ride on their calls, ``update_outcomes``), and a
    small one whose commits do not wait for the disk (journal outcomes alone: one lost
    in a crash leaves its entry an intent, outcome unknown, as a crash before the
    outcome always did; the batched decisions of the audit trail, see
    ``transaction``), with room for the two connections its writers keep
    (``Pinned``) and more; its statements are planned for their parameters each
    time (``force_custom_plan``): the generic plan PostgreSQL caches after five
    runs of the outcomes' UPDATE, chosen while the journal is small, scans the
    whole journal (a hash join), so each outcome cost more as the journal grew
    (PG CPU per PATCH 650 -> 1,800 us over 13,000 writes, until an ANALYZE).
    Neither resets a connection it takes back unless it
    is still in a transaction: the hot path leaves no other session state, and
    the reset was one more round trip per statement."""

    def __init__(self, pool: asyncpg.Pool, unsynced: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._unsynced = unsynced
        self._dsn = dsn  # the bus listens on a connection of its own
        # the three writers of every proxied write, each one call at a time (group
        # commit, the audit trail's batches), keep a connection each (``Pinned``)
        self._intents = Pinned(pool)
        self._outcomes = Pinned(unsynced)
        self._decisions = Pinned(unsynced)
        # outcomes and audit batches waiting for the next intents' call (``update_outcomes``,
        # ``append_audit``)
        self._riding: list[tuple[Sequence[Sequence[Any]], asyncio.Future[list[bool]]]] = []
        self._riding_audit: list[tuple[_Columns, asyncio.Future[list[Any]]]] = []
        self._alone: asyncio.TimerHandle | None = None
        self._in_flight = 0  # intents' calls under way: the riders wait for the next one
        self._tasks: set[asyncio.Task[None]] = set()
        # and the engages: one warm session, its plan of gateway_engage made once, so an
        # engage does not land on a pool connection that has not run it yet (the round
        # trip to prepare it, the function's first plans in that backend)
        self._engages = Pinned(pool)

    @classmethod
    async def connect(cls, dsn: str, max_size: int = 10,
                      process: str | None = None) -> PostgresHotPath:
        """``process``: this process's name, its sessions' ``application_name`` (``gateway
        <process>``): while it lives it keeps some (each pool keeps one, and the pinned
        writers theirs), so a process without any is dead (``PgBus.gone``)."""
        import asyncpg

        named = {} if process is None else {"application_name": SESSION_PREFIX + process}
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, reset=_rollback,
                                         connect=connect_primary,  # one host at a time
                                         server_settings=named)
        try:
            unsynced = await asyncpg.create_pool(
                dsn, min_size=1, max_size=4, reset=_rollback, connect=connect_primary,
                server_settings={"synchronous_commit": "off",
                                 "plan_cache_mode": "force_custom_plan", **named})
        except BaseException:
            await pool.close()
            raise
        return cls(pool, unsynced, dsn)

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        status: str = await self._pool.execute(numbered(sql), *args)
        return int(status.rsplit(" ", 1)[-1])

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]:
        return list(await self._pool.fetch(numbered(sql), *args))

    @asynccontextmanager
    async def transaction(self, locks: Sequence[int] = (), durable: bool = True,
                          ) -> AsyncIterator[Tx]:
        """``durable=False``: on the unsynced pool. The audit trail's batches of
        decisions commit so (``append_audit``: one call, its own transaction): the
        chain's lock is not held for a disk flush, so an engage (which takes the
        same lock) does not queue behind the flush of a batch of decisions. Those
        decisions were already only in memory until now (``AuditTrail``'s queue),
        so a crash loses at most the last fraction of a second of them, as before;
        WAL is replayed in order, so what survives is a prefix and the chain stays
        whole. Any synchronous
        commit after it (an engage's, an intent's) flushes it too."""
        async with (self._pool if durable else self._unsynced).acquire() as connection:
            taken = ", ".join(f"pg_advisory_xact_lock({key:d})" for key in locks)
            await connection.execute("BEGIN" + (f"; SELECT {taken}" if taken else ""))
            try:
                yield _PostgresTx(connection)
            except BaseException:
                await _abandon(connection)
                raise
            await connection.execute("COMMIT")

    async def insert_intents(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """The whole batch in one call of ``gateway_journal_write`` (migration 0022),
        with the outcomes and audit batches waiting for it (``update_outcomes``,
        ``append_audit``)."""
        self._in_flight += 1
        try:
            return await self._insert_intents(rows)
        finally:
            self._in_flight -= 1

    async def _insert_intents(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        riding, audits = self._take_riding(), self._take_audits()
        try:  # the rows as they are: asyncpg sends them as rows, in the binary format
            answer = await self._intents.fetch(
                _WRITE, rows, _rows(riding), *_joined(audits))
        except Exception:  # the intents' failure is not the riders': they go alone now
            if riding or audits:  # (one the store cannot take fails there)
                self._alone_now(riding, audits)
            raise
        except BaseException:  # the intents' caller cancelled: the riders wait again
            if riding or audits:
                self._ride(riding, audits)
            raise
        links = [row[2:] for row in answer if row[0] is None]  # the audit records
        if audits and links:
            _settle_audits(audits, links)
        elif audits:  # the chain's lock was busy: the records go alone
            self._alone_now([], audits)
        updated = {row[1] for row in answer if row[0]}
        for batch, future in riding:
            settle(future, [row[-1] in updated for row in batch])
        inserted = {row[1] for row in answer if row[0] is False}
        return [row[0] in inserted for row in rows]

    async def update_outcomes(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """On the next intents' call if one comes within ``RIDE`` seconds (it commits
        synchronously), else one statement on the unsynced pool: an outcome lost in a
        crash leaves its entry an intent, outcome unknown."""
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._ride([(rows, future)], [])
        return await future

    def _ride(self, riding: list[tuple[Sequence[Sequence[Any]], asyncio.Future[list[bool]]]],
              audits: list[tuple[_Columns, asyncio.Future[list[Any]]]]) -> None:
        self._riding.extend(riding)
        self._riding_audit.extend(audits)
        if self._alone is None:
            self._alone = asyncio.get_running_loop().call_later(RIDE, self._go_alone)

    def _take_riding(self) -> list[tuple[Sequence[Sequence[Any]], asyncio.Future[list[bool]]]]:
        riding, self._riding = self._riding, []
        if self._alone is not None:
            self._alone.cancel()
            self._alone = None
        return [(rows, future) for rows, future in riding if not future.done()]

    def _take_audits(self) -> list[tuple[_Columns, asyncio.Future[list[Any]]]]:
        """Every batch, cancelled or not: its caller may be gone, its records are not
        (the chain's order is the order they were handed in)."""
        audits, self._riding_audit = self._riding_audit, []
        return audits

    def _go_alone(self) -> None:
        """``RIDE`` seconds without an intents' call: the riders go alone, unless a call
        is under way (the intents that came meanwhile go in the next, right after it): a
        loop busy for longer than ``RIDE`` at 32 connections (each turn of it handles
        many requests) sent a third of the outcomes alone though intents went in all along."""
        if self._in_flight:
            self._alone = asyncio.get_running_loop().call_later(RIDE, self._go_alone)
            return
        self._alone = None
        riding, audits = self._take_riding(), self._take_audits()
        if riding or audits:
            self._alone_now(riding, audits)

    def _alone_now(self, riding: list[tuple[Sequence[Sequence[Any]],
                                            asyncio.Future[list[bool]]]],
                   audits: list[tuple[_Columns, asyncio.Future[list[Any]]]]) -> None:
        if riding:
            self._spawn(self._outcomes_alone(riding))
        if audits:
            self._spawn(self._audits_alone(audits))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _audits_alone(self, audits: list[tuple[_Columns,
                                                     asyncio.Future[list[Any]]]]) -> None:
        try:
            links = await self._decisions.fetch(_APPEND_AUDIT, *_joined(audits))
        except BaseException as exc:
            _fail(audits, exc)
            return
        _settle_audits(audits, links)

    async def _outcomes_alone(self, riding: list[tuple[Sequence[Sequence[Any]],
                                                       asyncio.Future[list[bool]]]]) -> None:
        try:
            updated = {row[0] for row in await self._outcomes.fetch(
                _OUTCOMES, _rows(riding))}
        except BaseException as exc:
            _fail(riding, exc)
            return
        for rows, future in riding:
            settle(future, [row[-1] in updated for row in rows])

    async def append_audit(self, items: Sequence[AuditItem], durable: bool = True,
                           ) -> list[AuditRecord]:
        """``audit.append_in`` as one round trip (``gateway_audit_append``, migration
        0019): the database takes the chain's lock, reads the last link and hashes each
        record after it from the canonical text given here (``canonical_head``).
        ``durable=False`` (the audit trail's batches of decisions): when an intents'
        call is under way (under load: calls follow each other), on the next one, unless
        none comes within ``RIDE`` seconds (0021; one call and one commit less, and its
        commit is synchronous); else at once alone on the unsynced pool
        (``transaction``): at rest the next intents' call is a reply's, which would wait
        for the chaining (one connection: 0.1-0.2 ms of the database's time)."""
        columns: _Columns = ([], [], [], [], [])
        for actor, action, detail, at in items:
            for column, value in zip(columns, (iso(at), actor, action, codec.dumps(detail),
                                               canonical_head(at, actor, action, detail)),
                                     strict=True):
                column.append(value)
        if durable:
            rows = await self._pool.fetch(_APPEND_AUDIT, *columns)
        elif not self._in_flight:
            rows = await self._decisions.fetch(_APPEND_AUDIT, *columns)
        else:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._ride([], [(columns, future)])
            rows = await future
        return [AuditRecord(seq, at, actor, action, detail, prev_hash, hash_)
                for (actor, action, detail, at), (seq, prev_hash, hash_)
                in zip(items, rows, strict=True)]

    async def engage(self, freeze: Freeze, announce: Notice | None = None) -> FreezeChange:
        """``killswitch.engage_in`` as one round trip (``gateway_engage``, migration 0018):
        the database links the audit record into the chain (or keeps it pending, not
        to wait for the chain's lock), and sends ``announce`` with the commit."""
        notice = announce or (None, None)
        rows = await self._engages.fetch(numbered(ks.PG_ENGAGE), *ks.engage_args(freeze),
                                         *notice)
        return ks.engaged(freeze, rows, announced=announce is not None)

    async def warm_engage(self) -> None:
        """Open the engages' connection and run ``gateway_engage`` once in a transaction
        rolled back (no freeze, no message, nothing chained): the first engage otherwise
        paid the connection, the statement's prepare and the function's first plans in
        that backend (measured 8-28 ms against 1.5-8 for the next, under load). It holds
        the arbiter's lock for that one call, as an engage would."""
        freeze = Freeze(FreezeScope.GLOBAL, None, "warm-up", "gateway", utcnow(), new_id())
        # a message too (its plans): a NOTIFY of a transaction rolled back is never sent
        await self._engages.rolled_back(numbered(ks.PG_ENGAGE), *ks.engage_args(freeze),
                                        "gateway_warm_up", '{"wait": 0}')

    async def warm(self) -> None:
        """The journal's two writers' connections, their statements prepared
        (``Pinned.prepare``): the first write otherwise read 0022's row types, up to
        80 ms."""
        try:
            await self._intents.prepare(_WRITE)
            await self._outcomes.prepare(_OUTCOMES)
        except Exception as exc:
            log.warning("the journal's writers could not be warmed (%s): the first write "
                        "prepares them", exc)

    async def probe(self) -> None:
        async with self.transaction() as tx:
            await tx.execute(_PROBE)

    def bus(self, member: str) -> PgBus:
        return PgBus(self._dsn, self._pool, member)

    async def flush(self) -> None:
        """Until everything committed so far is on disk and on the synchronous standby.

        A commit on ``pool`` waits for both, but a row seen committed may not
        be: the primary makes a commit visible before the standby has it, and
        when the connection waiting for that answer is cut, the row stays, on
        no standby (it is lost if the primary dies next). So this commits a
        transaction that writes (a logical message nobody decodes, open to any
        role; taking an id alone writes nothing, and a commit that wrote nothing
        waits for no standby), and the standby's answer for it covers everything
        committed before it: one round trip, for the journal's retry that finds
        its intent already in."""
        await self._pool.execute("SELECT pg_logical_emit_message(true, 'gateway', '')")

    async def close(self) -> None:
        riding, audits = self._take_riding(), self._take_audits()
        if riding:
            await self._outcomes_alone(riding)
        if audits:
            await self._audits_alone(audits)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pinned in (self._intents, self._outcomes, self._decisions, self._engages):
            await pinned.release()
        await self._unsynced.close()
        await self._pool.close()


class Pinned:
    """One connection of ``pool``, kept between calls by a caller that makes one call at
    a time: taking a connection from an asyncpg pool and giving it back cost ~80 us of
    the loop's CPU per call (a task for ``asyncio.shield``, the idle timer), more than
    sending the statement. After an error the connection goes back to the pool, which
    rolls it back or drops it as after any call (a broken one, one to a server that is
    no longer the primary), and the next call takes another."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._connection: Any = None  # a pool's connection proxy while kept
        self._lock = asyncio.Lock()  # one call at a time, should a caller not be serial

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._call(lambda connection: connection.fetch(sql, *args))

    async def rolled_back(self, sql: str, *args: Any) -> None:
        """``sql`` in a transaction that is rolled back, the lock held throughout (no
        other call can land in it): to make this session's plans of ``sql``. It waits
        for no lock more than 100 ms (then fails): a caller behind it would wait too."""
        async def rolled_back(connection: Any) -> list[Any]:
            await connection.execute("BEGIN; SET LOCAL lock_timeout = 100")
            try:
                await connection.fetch(sql, *args)
            finally:
                await connection.execute("ROLLBACK")
            return []
        await self._call(rolled_back)

    async def prepare(self, sql: str) -> None:
        """``sql`` prepared on the kept connection, not run: asyncpg reads the types of
        its parameters then, once per connection (a row type of 0022's took up to 80 ms
        in a first call)."""
        async def prepared(connection: Any) -> list[Any]:
            await connection.prepare(sql)
            return []
        await self._call(prepared)

    async def _call(self, work: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        async with self._lock:
            if self._connection is not None and self._connection._con is None:  # noqa: SLF001
                # closed while kept (the server dropped it): the pool took it back
                self._connection = None
            if self._connection is None:
                self._connection = await self._pool.acquire()
            try:
                return list(await work(self._connection))
            except BaseException:
                try:
                    await self._give_back()
                except Exception as exc:  # noqa: BLE001 - the error being handled is the real one
                    log.warning("giving back a connection failed (%s); the pool dropped it", exc)
                raise

    async def release(self) -> None:
        """Give the connection back (before the pool closes: it waits for every one)."""
        async with self._lock:
            await self._give_back()

    async def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)


def _rows(riding: Sequence[tuple[Sequence[Sequence[Any]], Any]]) -> list[Sequence[Any]]:
    """The riding outcome batches' rows as one list, in the order handed in."""
    return [row for rows, _ in riding for row in rows]


def _joined(audits: Sequence[tuple[_Columns, Any]]) -> list[list[str]]:
    """The riding audit batches as one: each column of each, in the order handed in."""
    return [[value for columns, _ in audits for value in columns[i]] for i in range(5)]


def _settle_audits(audits: Sequence[tuple[_Columns, asyncio.Future[list[Any]]]],
                   links: Sequence[Any]) -> None:
    """Each batch its own (seq, prev_hash, hash) rows, in order."""
    start = 0
    for columns, future in audits:
        settle(future, list(links[start:start + len(columns[0])]))
        start += len(columns[0])


def _fail(waiting: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    """Each rider's caller gets ``exc``; a cancel (no ``Exception``) goes on up."""
    for _, future in waiting:
        settle(future, exc=exc)
    if not isinstance(exc, Exception):
        raise exc


async def _abandon(connection: asyncpg.Connection) -> None:
    """Roll back after an error, never hiding it: on a connection that broke, or is still
    busy with the statement the error interrupted ("another operation is in progress"),
    the ROLLBACK fails too; then the connection is dropped (the server rolls back) and the
    caller re-raises the first error, the one that says what happened."""
    try:
        await connection.execute("ROLLBACK")
    except BaseException as exc:  # noqa: BLE001 - the error being handled is the real one
        log.warning("rollback failed (%s); dropping the connection", exc)
        connection.terminate()


async def _rollback(connection: asyncpg.Connection) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class _PostgresTx:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status: str = await self._connection.execute(numbered(sql), *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._connection.executemany(numbered(sql), rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self._connection.fetch(numbered(sql), *args))
