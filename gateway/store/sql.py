"""``SqlStore``: the ``ports.Store`` on SQLite or PostgreSQL.

Two ways in, by how hot the call is. The calls made on every proxied write
(``journal_intent``, ``journal_outcome``) and the kill switch's generation go
straight through the driver (``hot.py``, one per dialect). Intents and outcomes are group
committed (``group.py``): the writes of concurrent calls share one
transaction. An intent goes in only if no freeze covers it, decided by the
store in the same statement (``killswitch.py``). Everything an operator
triggers goes through SQLAlchemy and SQLModel, where clarity is worth more
than a fraction of a millisecond.

Writes that read before they write (the audit chain's last link, the one
active freeze per scope and target) are serialized: an asyncio.Lock within
the process, and across processes a transaction-scoped advisory lock on
PostgreSQL or ``BEGIN IMMEDIATE`` on SQLite. A freeze change and its audit
record commit together or not at all. The approval queue (``approvals.py``)
needs no such lock: each of its changes is a single compare-and-set UPDATE.
Nor do rollback plans (``rollbacks.py``): a plan is written whole in one
transaction, then changed one row at a time by its one executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, case, or_, text, update
from sqlalchemy import select as sql_select
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.audit import canonical_head, seal
from gateway.core.killswitch import InFlight
from gateway.core.model import (
    AuditRecord,
    Freeze,
    FreezeScope,
    JournalEntry,
    JournalOutcome,
    JournalQuery,
    JournalState,
    RunSummary,
    iso,
    parse_iso,
)
from gateway.ports import FreezeChange
from gateway.store import codec
from gateway.store import killswitch as ks
from gateway.store.approvals import ApprovalQueue
from gateway.store.bus import PgBus, SocketBus
from gateway.store.checkpoints import CheckpointLog
from gateway.store.engine import (
    IMMEDIATE,
    asyncpg_dsn,
    create_engine,
    is_postgres,
    parse_url,
    sqlite_path,
)
from gateway.store.group import GroupCommit
from gateway.store.hot import HotPath, Tx
from gateway.store.hot_postgres import PostgresHotPath
from gateway.store.hot_sqlite import SqliteHotPath
from gateway.store.leases import Leases
from gateway.store.migrate import upgrade
from gateway.store.reports import ReportQueries
from gateway.store.rollbacks import RollbackPlans
from gateway.store.seal import Sealer, sealer_for
from gateway.store.tables import AuditRow, JournalRow
from gateway.store.tripwire_counts import TripwireCounts

WRITE_LOCK = 0x67775F7772697465  # "gw_write": the advisory lock over audit and freezes
log = logging.getLogger("gateway.store")
PING_TIMEOUT = 5.0
_PROBE = "UPDATE killswitch SET generation = generation WHERE 1 = 0"  # a write, of nothing
# SQLite commits a write of nothing without touching the file: its probe rewrites a row
# nobody watches, so a database or WAL that cannot be written fails it.
_SQLITE_PROBE = "UPDATE alembic_version SET version_num = version_num"


def default_sealer(url: Any, journal_key: str | None = None) -> Sealer:
    """``journal_key``'s sealer, else on SQLite the key file beside the database (an
    in-memory database gets a key that lives as long as it does), else none."""
    if is_postgres(url):
        return sealer_for(journal_key, None)
    path = sqlite_path(url)
    if not journal_key and str(path) in ("", ":memory:"):
        return Sealer(os.urandom(32), "an in-memory database's own key")
    return sealer_for(journal_key, path)


class SqlStore(ApprovalQueue, RollbackPlans, ReportQueries, CheckpointLog, Leases,
               TripwireCounts):
    """The store behind the gateway.

    >>> store = SqlStore("sqlite+aiosqlite:///./gateway.db")  # doctest: +SKIP
    >>> await store.start()                                   # doctest: +SKIP
    """

    def __init__(self, database_url: str, process: str | None = None,
                 sealer: Sealer | None = None, fsync: bool = True) -> None:
        self.url = parse_url(database_url)
        # what held calls' exact requests are sealed with (gateway.store.seal); unset at
        # start: the SQLite key file, or none on PostgreSQL (the gateway sets journal_key's)
        self.sealer: Sealer | None = sealer
        self.process = process or process_name()  # journaled with every intent
        self._postgres = is_postgres(self.url)
        self._engine = create_engine(self.url)
        self._writer = self._engine.execution_options(**{IMMEDIATE: True})
        self._write_lock = asyncio.Lock()
        self._hot: HotPath | None = None
        self._fsync = fsync  # SQLite: intents on disk before their write is sent
        self._intents = GroupCommit(self._commit_intents)
        self._unsure: set[str] = set()  # intents of a batch whose commit may have happened
        self._outcomes = GroupCommit(self._commit_outcomes)

    def __repr__(self) -> str:
        return f"SqlStore({self.url.render_as_string()!r})"

    async def start(self) -> None:
        """Open the hot path (on SQLite: WAL mode), then create or migrate the schema."""
        if self._hot is not None:
            return
        if self.sealer is None:
            self.sealer = default_sealer(self.url)
        hot: HotPath
        if self._postgres:
            hot = await PostgresHotPath.connect(asyncpg_dsn(self.url))
        else:
            sqlite_path(self.url).parent.mkdir(parents=True, exist_ok=True)
            hot = await SqliteHotPath.connect(sqlite_path(self.url), self._fsync)
        try:
            await upgrade(self._engine)
        except BaseException:
            await hot.close()
            raise
        self._hot = hot

    def bus(self) -> PgBus | SocketBus:
        """The message bus of the processes sharing this store (not started)."""
        hot = self._hot_path()
        if isinstance(hot, PostgresHotPath):
            return PgBus(asyncpg_dsn(self.url), hot.pool, self.process)
        return SocketBus(sqlite_path(self.url), self.process)

    async def close(self) -> None:
        await self._intents.close()
        await self._outcomes.close()
        hot, self._hot = self._hot, None
        try:
            if hot is not None:
                await hot.close()
        finally:
            await self._engine.dispose()

    async def ping(self) -> bool:
        """Whether the store can take a write now: a write probe, not a flag.

        The journal's write path, one write transaction holding an UPDATE that
        matches no row: refused by a read-only or recovering PostgreSQL, a
        SQLite file that is read-only or locked past the timeout, or whose
        path no longer names the file the store opened (``SqliteFile``). Then
        the admin connection, which every operator call needs."""
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                async with self._hot_path().transaction() as tx:
                    await tx.execute(_SQLITE_PROBE if self._engine.dialect.name == "sqlite"
                                     else _PROBE)
                async with self._engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("store health: cannot take a write: %s", exc)
            return False
        return True

    def _hot_path(self) -> HotPath:
        if self._hot is None:
            raise RuntimeError(f"{self!r} is not started, or already closed")
        return self._hot

    # Hot path ---------------------------------------------------------------
    async def active_freezes(self) -> list[Freeze]:
        return (await self.freeze_view())[1]

    async def freeze_view(self) -> tuple[int, list[Freeze]]:
        """The kill switch's generation and the freezes active at it (one snapshot)."""
        rows = await self._hot_path().fetch(ks.SELECT_FREEZE_VIEW, ())
        freezes = [codec.freeze_from_values(*row[1:]) for row in rows if row[1] is not None]
        return int(rows[0][0]), freezes

    async def killswitch_generation(self) -> int:
        rows = await self._hot_path().fetch(ks.SELECT_GENERATION, ())
        return int(rows[0][0])

    async def journal_intent(self, entry: JournalEntry, *, unless_frozen: bool = True) -> bool:
        """Commit the intent; False, with nothing written, when a freeze covers it.

        Concurrent calls share one transaction. ``unless_frozen=False`` is for
        operators' writes (rollback), which freezes do not stop.
        """
        if not unless_frozen:
            hot = self._hot_path()
            await hot.execute(ks.INSERT_INTENT, codec.intent_params(entry, self.process))
            await hot.flush()
            return True
        return await self._intents(entry)

    async def _commit_intents(self, entries: list[JournalEntry]) -> list[bool]:
        try:
            return await self._insert_intents(entries)
        except (sqlite3.IntegrityError, asyncpg.UniqueViolationError):
            # Retried alone (GroupCommit) after a batch whose commit was reported failed
            # but had committed (a connection lost after COMMIT): its row is there, so it
            # is journaled; failing it would leave an intent nobody sends (issue 16).
            if len(entries) == 1 and entries[0].id in self._unsure \
                    and await self._journaled(entries[0].id):
                return [True]
            raise
        except Exception:
            if len(entries) > 1:  # each is tried again alone: it may be in already
                self._unsure.update(e.id for e in entries)
            raise
        finally:
            if len(entries) == 1:
                self._unsure.discard(entries[0].id)

    async def _journaled(self, entry_id: str) -> bool:
        return bool(await self._hot_path().fetch("SELECT 1 FROM journal WHERE id = ?",
                                                 (entry_id,)))

    async def _insert_intents(self, entries: list[JournalEntry]) -> list[bool]:
        hot = self._hot_path()
        rows = [codec.intent_params(e, self.process) for e in entries]
        if isinstance(hot, PostgresHotPath):
            inserted = {row[0] for row in await hot.fetch(ks.PG_INSERT_INTENTS_UNLESS_FROZEN,
                                                          (ks.intents_json(rows),))}
            return [e.id in inserted for e in entries]
        assert isinstance(hot, SqliteHotPath)
        counts = await hot.each(ks.INSERT_INTENT_UNLESS_FROZEN,
                                [(*row, e.upstream, e.agent) for row, e in zip(rows, entries)])
        if any(counts):
            await hot.flush()  # on disk before any of these writes is sent
        return [count == 1 for count in counts]

    async def journal_outcome(self, entry_id: str, outcome: JournalOutcome) -> None:
        """Record the outcome; LookupError if no intent was journaled under that id."""
        if not await self._outcomes(codec.outcome_params(entry_id, outcome)):
            raise LookupError(f"no journal entry {entry_id!r}")

    async def _commit_outcomes(self, rows: list[tuple[Any, ...]]) -> list[bool]:
        hot = self._hot_path()
        if isinstance(hot, PostgresHotPath):
            updated = {row[0] for row in await hot.fetch_unsynced(ks.PG_UPDATE_OUTCOMES,
                                                                  ks.columns_of(rows))}
            return [row[-1] in updated for row in rows]
        assert isinstance(hot, SqliteHotPath)
        return [count == 1 for count in await hot.each(codec.UPDATE_OUTCOME, rows)]

    async def pending_intents(self, since: datetime) -> list[InFlight]:
        """Intents journaled at or after ``since`` that have no outcome yet."""
        rows = await self._hot_path().fetch(ks.SELECT_PENDING_INTENTS, (iso(since),))
        return [InFlight(*row) for row in rows]

    # Kill switch ------------------------------------------------------------
    async def engage(self, freeze: Freeze) -> FreezeChange:
        """Through the driver, in one short transaction: an engage must not queue
        behind the stream of journal writes it is about to stop."""
        hot = self._hot_path()
        if isinstance(hot, PostgresHotPath):
            return await _engage_in_one_call(hot, freeze)
        # the audit chain's lock, then the arbiter's: it waits for intent batches under way
        # One read of the kill switch, first: no other engage or release can change it
        # while this transaction holds WRITE_LOCK, so the state it leaves is that read
        # plus this freeze (a round trip fewer than reading it again at the end).
        async with hot.transaction((WRITE_LOCK, ks.ARBITER_LOCK)) as tx:
            before = await _change_in(tx, None)
            same = next((f for f in before.active if f.scope == freeze.scope
                         and (f.target or "") == (freeze.target or "")), None)
            if same is not None:
                return FreezeChange(same, before.generation, before.active)
            await tx.execute(ks.INSERT_FREEZE, (freeze.id, freeze.scope.value, freeze.target,
                                                freeze.reason, freeze.by, iso(freeze.at)))
            await tx.execute(ks.BUMP_GENERATION)
            await _append_in(tx, freeze.by, "killswitch.engage",
                             _freeze_detail(freeze.scope, freeze.target, freeze.reason), freeze.at)
            return FreezeChange(freeze, before.generation + 1, [*before.active, freeze])

    async def release(self, scope: FreezeScope, target: str | None, by: str, reason: str,
                      at: datetime) -> FreezeChange:
        async with self._hot_path().transaction((WRITE_LOCK,)) as tx:
            rows = await tx.fetch(ks.SELECT_ACTIVE_FREEZE, (scope.value, target or ""))
            if not rows:
                return await _change_in(tx, None)
            released = codec.freeze_from_values(*rows[0])
            await tx.execute(ks.RELEASE_FREEZE, (iso(at), by, reason, released.id))
            await tx.execute(ks.BUMP_GENERATION)
            await _append_in(tx, by, "killswitch.release", _freeze_detail(scope, target, reason),
                             at)
            return await _change_in(tx, released)

    # Journal (admin) --------------------------------------------------------
    async def list_journal(self, query: JournalQuery) -> list[JournalEntry]:
        if query.ids is not None and not query.ids:
            return []
        statement = select(JournalRow)
        for column, value in ((JournalRow.agent, query.agent),
                              (JournalRow.upstream, query.upstream),
                              (JournalRow.run, query.run)):
            if value is not None:
                statement = statement.where(col(column) == value)
        if query.since is not None:
            statement = statement.where(col(JournalRow.at) >= iso(query.since))
        if query.until is not None:
            statement = statement.where(col(JournalRow.at) <= iso(query.until))
        if query.ids is not None:
            statement = statement.where(col(JournalRow.id).in_(query.ids))
        for column, value in ((JournalRow.method, query.method), (JournalRow.state, query.state),
                              (JournalRow.decision, query.decision),
                              (JournalRow.would_decide, query.would_decide)):
            if value is not None:
                statement = statement.where(col(column) == value)
        if query.path:
            statement = statement.where(col(JournalRow.path).contains(query.path,
                                                                      autoescape=True))
        at, id_ = col(JournalRow.at), col(JournalRow.id)
        if query.after is not None:  # keyset paging: past the previous page's last entry
            last_at, last_id = iso(query.after[0]), query.after[1]
            statement = statement.where(
                or_(at < last_at, and_(at == last_at, id_ < last_id)) if query.newest_first
                else or_(at > last_at, and_(at == last_at, id_ > last_id)))
        order = (at.desc(), id_.desc()) if query.newest_first else (at.asc(), id_.asc())
        statement = statement.order_by(*order).limit(query.limit)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.entry_from_row(row) for row in rows]

    async def get_journal(self, entry_id: str) -> JournalEntry | None:
        async with AsyncSession(self._engine) as session:
            row = await session.get(JournalRow, entry_id)
        return None if row is None else codec.entry_from_row(row)

    async def list_runs(self, query: JournalQuery) -> list[RunSummary]:
        """Runs (agent and ``X-Agent-Run``) newest first, from the agents' writes (not
        rollbacks); ``query``'s agent, upstream, run and time window filter them."""
        at, agent, run = col(JournalRow.at), col(JournalRow.agent), col(JournalRow.run)
        status, state = col(JournalRow.status), col(JournalRow.state)
        shadow = state == JournalState.SHADOW.value  # proposed, never sent: counted apart
        sent = state != JournalState.SHADOW.value
        failed = and_(sent, or_(status.is_(None), status >= 400))
        where = [col(JournalRow.decision) != "rollback"]
        for column, value in ((agent, query.agent), (run, query.run),
                              (col(JournalRow.upstream), query.upstream)):
            if value is not None:
                where.append(column == value)
        if query.since is not None:
            where.append(at >= iso(query.since))
        if query.until is not None:
            where.append(at <= iso(query.until))
        summary = (sql_select(agent, run, func.min(at), func.max(at),
                          func.sum(case((sent, 1), else_=0)),
                          func.sum(case((and_(sent, col(JournalRow.reversible)), 1), else_=0)),
                          func.sum(case((state == JournalState.ROLLED_BACK.value, 1), else_=0)),
                          func.sum(case((failed, 1), else_=0)),
                          func.sum(case((shadow, 1), else_=0)))
                   .where(*where).group_by(agent, run)
                   .order_by(func.max(at).desc(), agent, run).limit(query.limit))
        upstreams = sql_select(agent, run, col(JournalRow.upstream)).where(*where).distinct()
        async with self._engine.connect() as connection:
            rows = (await connection.execute(summary)).all()
            used: dict[tuple[str, str | None], list[str]] = {}
            for a, r, u in (await connection.execute(upstreams)).all():
                used.setdefault((a, r), []).append(u)
        return [RunSummary(a, r, parse_iso(first), parse_iso(last), int(n or 0), int(rev or 0),
                           int(back or 0), int(bad or 0), tuple(sorted(used.get((a, r), []))),
                           int(shadowed or 0))
                for a, r, first, last, n, rev, back, bad, shadowed in rows]

    async def mark_rolled_back(self, entry_id: str, plan_id: str, at: datetime) -> bool:
        statement = (update(JournalRow)
                     .where(col(JournalRow.id) == entry_id,
                            col(JournalRow.state).in_((JournalState.COMPLETED.value,
                                                       JournalState.UNKNOWN.value)))
                     .values(state=JournalState.ROLLED_BACK.value, rolled_back_plan=plan_id,
                             rolled_back_at=iso(at)))
        async with self._writer.begin() as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount == 1)

    # Audit ------------------------------------------------------------------
    async def append_audit(self, actor: str, action: str, detail: dict[str, Any],
                           at: datetime) -> AuditRecord:
        async with self._serialized() as session:
            return await self._append(session, actor, action, detail, at)

    async def append_audit_many(self, items: list[tuple[str, str, dict[str, Any], datetime]],
                                ) -> list[AuditRecord]:
        """Several (actor, action, detail, at) records, chained in one transaction.

        This is the proxy's path (every decision on a write), so it goes through
        the driver like the journal: on SQLite through the same connection, so
        it never waits on a lock held by the journal's own writes.
        """
        records: list[AuditRecord] = []

        def build(last: Any) -> list[Any]:
            records.clear()  # a retried transaction builds again from the new last row
            previous = None if last is None else codec.audit_from_values(last)
            for actor, action, detail, at in items:
                previous = seal(previous, at, actor, action, detail)
                records.append(previous)
            return [codec.audit_params(r) for r in records]

        await self._hot_path().chained_insert(codec.SELECT_LAST_AUDIT, codec.INSERT_AUDIT,
                                              build, WRITE_LOCK)
        return list(records)

    async def find_audit(self, terms: list[str], limit: int = 200) -> list[AuditRecord]:
        """Records whose detail names any of ``terms`` (ids), oldest first: an entry's
        decision, the approval that held it, the plans that undid it."""
        if not terms:
            return []
        detail = col(AuditRow.detail)
        statement = (select(AuditRow).where(or_(*[detail.contains(f'"{t}"', autoescape=True)
                                                  for t in terms]))
                     .order_by(col(AuditRow.seq)).limit(limit))
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.audit_from_row(row) for row in rows]

    async def list_audit(self, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        statement = (select(AuditRow).where(col(AuditRow.seq) > after)
                     .order_by(col(AuditRow.seq)).limit(limit))
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(statement)).all()
        return [codec.audit_from_row(row) for row in rows]

    @asynccontextmanager
    async def _serialized(self) -> AsyncIterator[AsyncSession]:
        """A write transaction no other writer of audit or freezes can interleave with."""
        async with self._write_lock, AsyncSession(self._writer) as session, session.begin():
            if self._postgres:
                await session.exec(select(func.pg_advisory_xact_lock(WRITE_LOCK)))
            yield session

    @staticmethod
    async def _append(session: AsyncSession, actor: str, action: str, detail: dict[str, Any],
                      at: datetime) -> AuditRecord:
        last = (await session.exec(
            select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(1))).first()
        record = seal(None if last is None else codec.audit_from_row(last),
                      at, actor, action, detail)
        session.add(codec.audit_row(record))
        return record


async def _engage_in_one_call(hot: PostgresHotPath, freeze: Freeze) -> FreezeChange:
    """The same engage as the transaction in ``SqlStore.engage``, as one round trip
    (``gateway_engage``, migration 0017); the store seals the audit record."""
    detail = _freeze_detail(freeze.scope, freeze.target, freeze.reason)
    rows = await hot.fetch(ks.PG_ENGAGE, (
        freeze.id, freeze.scope.value, freeze.target, freeze.reason, freeze.by, iso(freeze.at),
        codec.dumps(detail), canonical_head(freeze.at, freeze.by, "killswitch.engage", detail)))
    active = [codec.freeze_from_values(*row[2:]) for row in rows if row[2] is not None]
    if rows[0][0]:
        return FreezeChange(freeze, int(rows[0][1]), active)
    same = next(f for f in active if f.scope == freeze.scope
                and (f.target or "") == (freeze.target or ""))
    return FreezeChange(same, int(rows[0][1]), active)


async def _change_in(tx: Tx, freeze: Freeze | None) -> FreezeChange:
    """The change, with the generation and the freezes as this transaction leaves them."""
    rows = await tx.fetch(ks.SELECT_FREEZE_VIEW)
    return FreezeChange(freeze, int(rows[0][0]), [codec.freeze_from_values(*row[1:])
                                                  for row in rows if row[1] is not None])


async def _append_in(tx: Tx, actor: str, action: str, detail: dict[str, Any],
                     at: datetime) -> AuditRecord:
    """The next link of the audit chain, in a transaction that excludes other chain writers."""
    last = await tx.fetch(codec.SELECT_LAST_AUDIT)
    record = seal(codec.audit_from_values(last[0]) if last else None, at, actor, action, detail)
    await tx.execute(codec.INSERT_AUDIT, codec.audit_params(record))
    return record


def process_name() -> str:
    """This process's name on the bus and in the journal: pid and 8 random hex digits."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _freeze_detail(scope: FreezeScope, target: str | None, reason: str) -> dict[str, Any]:
    return {"scope": scope.value, "target": target, "reason": reason}
