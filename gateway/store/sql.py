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
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, case, or_, text, update
from sqlalchemy import select as sql_select
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

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
from gateway.ports import Bus, FreezeChange
from gateway.store import codec
from gateway.store import killswitch as ks
from gateway.store.approvals import ApprovalQueue
from gateway.store.audit import WRITE_LOCK, AuditItem, append_in
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
from gateway.store.hot import HotPath
from gateway.store.hot_postgres import PostgresHotPath
from gateway.store.hot_sqlite import SqliteHotPath
from gateway.store.leases import Leases
from gateway.store.migrate import upgrade
from gateway.store.reports import ReportQueries
from gateway.store.rollbacks import RollbackPlans
from gateway.store.seal import Sealer, sealer_for
from gateway.store.tables import AuditRow, JournalRow
from gateway.store.tripwire_counts import TripwireCounts

log = logging.getLogger("gateway.store")
PING_TIMEOUT = 5.0


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

    def bus(self) -> Bus:
        """The message bus of the processes sharing this store (not started)."""
        return self._hot_path().bus(self.process)

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
                await self._hot_path().probe()
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
        return await self._hot_path().insert_intents(
            [codec.intent_params(e, self.process) for e in entries])

    async def journal_outcome(self, entry_id: str, outcome: JournalOutcome) -> None:
        """Record the outcome; LookupError if no intent was journaled under that id."""
        if not await self._outcomes(codec.outcome_params(entry_id, outcome)):
            raise LookupError(f"no journal entry {entry_id!r}")

    async def _commit_outcomes(self, rows: list[tuple[Any, ...]]) -> list[bool]:
        return await self._hot_path().update_outcomes(rows)

    async def pending_intents(self, since: datetime) -> list[InFlight]:
        """Intents journaled at or after ``since`` that have no outcome yet."""
        rows = await self._hot_path().fetch(ks.SELECT_PENDING_INTENTS, (iso(since),))
        return [InFlight(*row) for row in rows]

    # Kill switch ------------------------------------------------------------
    async def engage(self, freeze: Freeze) -> FreezeChange:
        """Through the driver, in one short transaction: an engage must not queue
        behind the stream of journal writes it is about to stop."""
        return await self._hot_path().engage(freeze)

    async def release(self, scope: FreezeScope, target: str | None, by: str, reason: str,
                      at: datetime) -> FreezeChange:
        async with self._hot_path().transaction((WRITE_LOCK,)) as tx:
            rows = await tx.fetch(ks.SELECT_ACTIVE_FREEZE, (scope.value, target or ""))
            if not rows:
                return await ks.change_in(tx, None)
            released = codec.freeze_from_values(*rows[0])
            await tx.execute(ks.RELEASE_FREEZE, (iso(at), by, reason, released.id))
            await tx.execute(ks.BUMP_GENERATION)
            await append_in(tx, [(by, "killswitch.release",
                                  ks.freeze_detail(scope, target, reason), at)])
            return await ks.change_in(tx, released)

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
        async with self._hot_path().transaction((WRITE_LOCK,)) as tx:
            return (await append_in(tx, [(actor, action, detail, at)]))[0]

    async def append_audit_many(self, items: list[AuditItem]) -> list[AuditRecord]:
        """Several (actor, action, detail, at) records, chained in one transaction.

        This is the proxy's path (every decision on a write), through the driver
        like the journal: on SQLite through the same connection, so it never waits
        on a lock held by the journal's own writes; on PostgreSQL a commit that
        does not wait for the disk (``PostgresHotPath.transaction``).
        """
        async with self._hot_path().transaction((WRITE_LOCK,), durable=False) as tx:
            return await append_in(tx, items)

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


def open_store(database_url: str, fsync: bool = True) -> SqlStore:
    """A ``SqlStore`` for ``sqlite+aiosqlite:///FILE`` or ``postgresql+asyncpg://...``; it
    still needs ``await store.start()`` (connect and migrate) and ``await store.close()``."""
    return SqlStore(database_url, fsync=fsync)


def process_name() -> str:
    """This process's name on the bus and in the journal: pid and 8 random hex digits."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"
