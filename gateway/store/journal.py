"""The change journal in the store (a mixin of ``SqlStore``).

Intents and outcomes, written on every proxied write, go through the hot path
(``hot.py``) and are group committed (``group.py``): the writes of concurrent
calls share one transaction. An intent goes in only if no freeze covers it,
decided by the store in the statement that inserts (``killswitch.py``). What
operators read goes through SQLAlchemy and SQLModel.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, case, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.model import (
    JournalEntry,
    JournalOutcome,
    JournalQuery,
    JournalState,
    RunSummary,
    iso,
    parse_iso,
)
from gateway.group_commit import GroupCommit
from gateway.store import codec
from gateway.store import killswitch as ks
from gateway.store.hot import HotPath
from gateway.store.tables import JournalRow


class JournalLog:
    """``journal_intent`` ... ``mark_rolled_back`` of ``ports.JournalStore`` (the
    stale intents of recovery are ``leases.Leases``')."""

    process: str  # journaled with every intent
    _engine: AsyncEngine  # reads
    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite
    _intents: GroupCommit[JournalEntry, bool]
    _unsure: set[str]  # intents of a batch whose commit may have happened
    _duplicate: tuple[type[Exception], ...]  # an intent already in: the driver's error

    if TYPE_CHECKING:  # SqlStore's
        def _hot_path(self) -> HotPath: ...

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
        except self._duplicate:
            # Retried alone (GroupCommit) after a batch whose commit was reported failed
            # but had committed (a connection lost after COMMIT): its row is there, so it
            # is journaled once it is durable (``flush``: on SQLite on disk, and a batch
            # whose flush failed is not, nor does a later flush prove it; on PostgreSQL
            # on the synchronous standby too, which the row may not be: the primary shows
            # a commit before the standby has it); failing it would leave an intent
            # nobody sends (issue 16).
            if len(entries) == 1 and entries[0].id in self._unsure \
                    and await self._journaled(entries[0].id):
                await self._hot_path().flush()
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
        if not (await self.journal_outcomes([(entry_id, outcome)]))[0]:
            raise LookupError(f"no journal entry {entry_id!r}")

    async def journal_outcomes(self, outcomes: list[tuple[str, JournalOutcome]]) -> list[bool]:
        """Several outcomes in one batch (the caller batches them: ``Journal.later``
        group-commits what the proxy answers); whether each found its intent."""
        return await self._hot_path().update_outcomes(
            [codec.outcome_params(entry_id, outcome) for entry_id, outcome in outcomes])

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
