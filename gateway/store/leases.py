"""Leases and recovery: one executor per piece of work across every process.

``Leases`` is a mixin of ``SqlStore``. A lease is a row of ``leases`` (0012)
named for the work it covers (``plan:<id>`` for a rollback plan being
applied, ``process:<name>`` for a running gateway process, its heartbeat).
``take_lease`` is one upsert that changes the row only when the old lease
lapsed or is the taker's own, so of any number of processes exactly one sees
``True``; the holder renews it the same way while it works and deletes it
when done. A process that dies stops renewing: its leases lapse, and the
work they covered is taken over by one other process.

``recover_process`` settles what a dead process left: its intents become
``unknown`` (it may or may not have sent them; prior and undo are kept so a
rollback can reconcile them), and the journal entries it wrote that no audit
record names are returned, for the caller to audit from the committed intent.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.model import JournalEntry, JournalState, iso, parse_iso
from gateway.store import codec
from gateway.store.tables import JournalRow

_TAKE = text(
    "INSERT INTO leases (name, owner, expires_at) VALUES (:name, :owner, :until) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE leases.expires_at < :now OR leases.owner = excluded.owner")
_RELEASE = text("DELETE FROM leases WHERE name = :name AND owner = :owner")
_LAPSED = text("SELECT name, owner FROM leases WHERE name LIKE :prefix AND expires_at < :now "
               "ORDER BY name")
_HOLDER = text("SELECT owner, expires_at FROM leases WHERE name = :name")
# the open intents: on PostgreSQL from their own table (0023; the journal's partial index
# keeps an entry per write of the last minutes there, until a vacuum), on SQLite the index
_OPEN = {False: "journal WHERE state = 'intent' AND", True: "journal_open WHERE"}
_INTENTS_OF = {pg: text(f"SELECT id FROM {_OPEN[pg]} process = :process") for pg in _OPEN}
_TO_UNKNOWN = text("UPDATE journal SET state = :unknown, error = :why, completed_at = :now "
                   "WHERE id = :id AND state = 'intent'")
_OWN_INTENTS = {pg: text(f"SELECT id FROM {_OPEN[pg]} process = :process AND at < :before")
                for pg in _OPEN}
_INTENT_PROCESSES = {pg: text(f"SELECT DISTINCT process FROM {_OPEN[pg]} at < :before "
                              "AND process IS NOT NULL") for pg in _OPEN}
_AUDIT_SINCE = text("SELECT action, detail FROM audit WHERE at >= :since")
_RUNNING = text("SELECT id FROM approvals WHERE status = 'approved' AND id IN :ids"
                ).bindparams(bindparam("ids", expanding=True))
# the records that end a claimed held call (``services.finishes``, or the sweeper's
# ``approval.unknown`` for a claim whose lease lapsed): each names the call
_APPROVAL_ENDS = frozenset({"approval.executed", "approval.failed", "approval.unknown"})
# the server's start (a restart, or another server promoted, changes it) and its address
_INCARNATION = text("SELECT pg_postmaster_start_time()::text || ' ' || "
                    "coalesce(inet_server_addr()::text, '') || ':' || "
                    "coalesce(inet_server_port()::text, '')")
# the open intents' own table loses a row to every outcome: its dead rows are vacuumed by
# every recovery round (autovacuum wakes once a minute; the engage reads the table whole);
# never truncated here: that takes a lock every write's trigger and the engage would wait for
_TIDY = text("VACUUM (SKIP_LOCKED, TRUNCATE false) journal_open")
DEAD = ("the gateway process that sent it stopped before its outcome was journaled; "
        "it may or may not have reached the upstream")


class Leases:
    """``take_lease`` ... ``recover_process`` of ``ports.Store``."""

    _engine: AsyncEngine  # reads
    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite
    _postgres: bool

    async def take_lease(self, name: str, owner: str, now: datetime, seconds: float) -> bool:
        """Take (or renew) lease ``name`` for ``seconds``: True for its one holder."""
        async with self._writer.begin() as connection:
            result = await connection.execute(_TAKE, {
                "name": name, "owner": owner, "now": iso(now),
                "until": iso(now + timedelta(seconds=seconds))})
        return bool(result.rowcount == 1)

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._writer.begin() as connection:
            await connection.execute(_RELEASE, {"name": name, "owner": owner})

    async def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(_HOLDER, {"name": name})).first()
        return None if row is None else (row[0], parse_iso(row[1]))

    async def lapsed_leases(self, prefix: str, now: datetime) -> list[tuple[str, str]]:
        """(name, owner) of the leases named ``prefix...`` that lapsed before ``now``."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(_LAPSED, {"prefix": prefix + "%",
                                                       "now": iso(now)})).all()
        return [(row[0], row[1]) for row in rows]

    async def intent_processes(self, before: datetime) -> list[str]:
        """The processes that journaled an intent before ``before`` still without outcome."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(_INTENT_PROCESSES[self._postgres],
                                             {"before": iso(before)})).all()
        return sorted(row[0] for row in rows)

    async def stale_intents(self, process: str, before: datetime) -> list[str]:
        """``process``'s intents journaled before ``before`` still without outcome."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(_OWN_INTENTS[self._postgres], {
                "process": process, "before": iso(before)})).all()
        return sorted(row[0] for row in rows)

    async def abandon_intents(self, ids: list[str], why: str, now: datetime) -> None:
        """These intents become ``unknown`` (their outcome will never come)."""
        async with self._writer.begin() as connection:
            for entry_id in ids:
                await connection.execute(_TO_UNKNOWN, {
                    "unknown": JournalState.UNKNOWN.value, "why": why, "now": iso(now),
                    "id": entry_id})

    async def recover_process(self, process: str, now: datetime) -> tuple[list[str],
                                                                          list[JournalEntry]]:
        """What dead ``process`` left: the ids of its intents, now ``unknown``, and its
        entries no audit record names (oldest first)."""
        async with self._writer.begin() as connection:
            ids = sorted((await connection.execute(_INTENTS_OF[self._postgres],
                                                   {"process": process})).scalars())
            for entry_id in ids:
                await connection.execute(_TO_UNKNOWN, {
                    "unknown": JournalState.UNKNOWN.value, "why": DEAD, "now": iso(now),
                    "id": entry_id})
        return ids, await self.unaudited(process)

    async def tidy(self) -> None:
        """PostgreSQL: vacuum ``journal_open`` (migration 0023). Each outcome deletes its
        intent's row there, and autovacuum comes at most once a minute: at thousands of
        writes a second the kill switch's read of the open intents (a sequential scan)
        grew to several milliseconds by then. Called every recovery round (a third of
        ``executor_lease``); ``SKIP_LOCKED``: a process that finds another's vacuum
        running leaves it that round; ``TRUNCATE false``: cutting the file's empty tail
        would take the table's exclusive lock, which every intent's trigger and the
        engage's read would wait for (autovacuum still does, rarely). A role that does
        not own the table gets a warning from the server, not an error. SQLite: nothing
        (an outcome rewrites its index entry in place)."""
        if not self._postgres:
            return
        async with self._engine.connect() as connection:
            ready = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await ready.execute(_TIDY)

    async def incarnation(self) -> str:
        if self._engine.dialect.name != "postgresql":
            return "sqlite"  # a machine's crash that loses its unflushed commits kills us too
        async with self._engine.connect() as connection:
            return str((await connection.execute(_INCARNATION)).scalar_one())

    async def unaudited(self, process: str, since: datetime | None = None,
                        before: datetime | None = None) -> list[JournalEntry]:
        """``process``'s journal entries (journaled in [``since``, ``before``) when given)
        that no audit record names, oldest first.

        A held call's entry is accounted for by the record of the call's end, which names
        the call (and the entry, when the executor saved it): ``approval.executed`` or
        ``failed``, or the sweeper's ``approval.unknown`` once the claim's lease lapsed
        with the answer unsaved. While the call is still claimed (``approved``) that
        record is yet to come, from its executor or the sweeper: not missing either."""
        statement = (select(JournalRow).where(col(JournalRow.process) == process,
                                              col(JournalRow.decision) != "rollback",
                                              col(JournalRow.state) != JournalState.SHADOW.value)
                     .order_by(col(JournalRow.at), col(JournalRow.id)))
        if since is not None:
            statement = statement.where(col(JournalRow.at) >= iso(since))
        if before is not None:
            statement = statement.where(col(JournalRow.at) < iso(before))
        async with AsyncSession(self._engine) as session:
            entries = [codec.entry_from_row(row) for row in (await session.exec(statement)).all()]
        if not entries:
            return []
        named: set[str] = set()  # entries, and the held calls whose end is recorded
        held = sorted({a for a in map(_approval_of, entries) if a is not None})
        async with self._engine.connect() as connection:
            if held:  # a call ended commits with its record (one transaction)
                named.update((await connection.execute(_RUNNING, {"ids": held})).scalars())
            first = iso(entries[0].at - timedelta(minutes=1))
            for action, detail in (await connection.execute(_AUDIT_SINCE,
                                                            {"since": first})).all():
                try:
                    value = json.loads(detail)
                except ValueError:
                    continue
                keys = ("journal", "journal_id", "approval") if action in _APPROVAL_ENDS \
                    else ("journal", "journal_id")
                for key in keys:
                    if isinstance(value.get(key), str):
                        named.add(value[key])
        return [entry for entry in entries
                if entry.id not in named and _approval_of(entry) not in named]


def _approval_of(entry: JournalEntry) -> str | None:
    """The held call that ``entry`` executed, if any."""
    approval = (entry.approval or {}).get("id")
    return approval if isinstance(approval, str) else None
