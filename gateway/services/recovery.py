"""Recovery: what a dead process left is taken over by exactly one live one.

Every process keeps a heartbeat lease (``process:<name>``, renewed every
third of ``executor_lease``). Then, again and again:

- a process whose heartbeat lapsed (or that left intents and never had one) is
  recovered by the one process that takes its lease over: the writes its agents
  sent are marked as left (``WriteResends.strand``: a resend gets ``409
  already_sent``), its intents become ``unknown`` (prior and undo kept, so
  rollback can reconcile them), and each of its journal entries that no audit
  record names gets one, appended from the committed intent (the listener's
  record was still in memory when it died). A crash therefore costs no write
  its journal entry nor its audit record, without a synchronous audit commit
  per reply. After a round that
  could not renew this process's heartbeat (the store down: nobody's can be)
  nobody is taken over for a lease and a round: the live ones renew theirs first;
- each of this process's own journal entries, once older than a write may
  take (plus a lease), is looked for in the audit: the store may have lost
  its record while this process lived (on PostgreSQL the decisions commit
  without waiting for the standby, and a failover to a standby that lacks the
  last of them drops them; the intent itself waited for it). A record found
  missing is appended again from the journal, durably. Each entry is looked
  at in one round after the round's heartbeat, a durable commit, which makes
  every record appended before it durable too;
- rollback plans whose executor's lease lapsed are resumed, each by one
  process (``Rollbacks.resume_unfinished``).

Held and delayed calls have their own one-executor claim (``approvals``: a
compare-and-set claim with a lease the sweeper enforces). The record of a held
call's end (its executor's, or the sweeper's ``approval.unknown`` when the claim
lapsed with the answer unsaved) accounts for its entry: recovery appends none
beside it, nor while the call is still claimed (``Store.unaudited``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import timedelta
from typing import Any

from gateway.core.model import JournalEntry, iso, utcnow
from gateway.deadline import cancelled
from gateway.ports import RecoveryStore
from gateway.services.journal import Journal
from gateway.services.resends import WriteResends
from gateway.services.rollbacks import Rollbacks

log = logging.getLogger("gateway.recovery")


class Recovery:
    def __init__(self, store: RecoveryStore, rollbacks: Rollbacks, journal: Journal, process: str,
                 lease_seconds: float, horizon: float,
                 resends: WriteResends | None = None) -> None:
        self.store = store
        self.resends = resends  # a dead process's writes: their agents' resends stopped
        self.journal = journal  # this process's intents whose outcome it still holds
        self.rollbacks = rollbacks
        self.process = process
        self.lease_seconds = lease_seconds
        self.horizon = horizon  # seconds a write may take: older intents of no process are dead
        self._task: asyncio.Task[None] | None = None
        self._audited_to = utcnow()  # this process's entries before it have their records
        self._incarnation: str | None = None  # the store's server, as last seen
        self._suspect_to = self._audited_to  # entries journaled before it are looked at
        # monotonic: no process is taken for dead before (``_dead``); inf while this
        # process cannot renew its heartbeat (the store down)
        self._trust_from = 0.0

    @property
    def _heartbeat(self) -> str:
        return f"process:{self.process}"

    async def start(self) -> None:
        """Heartbeat first (this process is alive before it journals anything), then the
        first round of recovery, then the loop."""
        self._audited_to = self._suspect_to = utcnow()
        self._incarnation = await self.store.incarnation()
        await self.store.take_lease(self._heartbeat, self.process, utcnow(), self.lease_seconds)
        await self._round()
        self._task = asyncio.create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.rollbacks.stop()
        try:  # stopped cleanly: what it leaves is not a crash's
            await self.store.release_lease(self._heartbeat, self.process)
        except Exception:
            log.warning("could not drop this process's heartbeat; it lapses by itself")

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            await self._round()

    async def _round(self) -> None:
        try:
            await self.store.take_lease(self._heartbeat, self.process, utcnow(),
                                        self.lease_seconds)
        except Exception as exc:  # the store is down (no heartbeat is renewed): next round
            if cancelled():  # a cancel a driver turned into an error: stop
                raise
            self._trust_from = math.inf
            log.warning("recovery round failed: %s", exc)
            return
        if self._trust_from == math.inf:  # back: every heartbeat may have lapsed meanwhile
            self._trust_from = time.monotonic() + self.lease_seconds * 4 / 3
        try:
            await self._lost_records()
            if time.monotonic() >= self._trust_from:
                for process in await self._dead():
                    await self.recover(process)
            await self.journal.lost_outcomes(  # saved, then lost by the store
                self.process, utcnow() - timedelta(seconds=self.horizon))
            await self.rollbacks.resume_unfinished()
            await self.store.tidy()
        except Exception as exc:  # the store went down meanwhile, say: next round
            log.warning("recovery round failed: %s", exc)

    async def _dead(self) -> list[str]:
        """The processes whose heartbeat lapsed, or that left intents and have none.

        Not asked for a lease and a round after this process could not renew its own
        heartbeat (the store down): no process could renew its own meanwhile, so every
        one has lapsed when the store comes back, the live ones too. Taken over, a live
        process's writes still on their way would become ``unknown`` and get a second,
        "recovered" audit record beside the one it has queued. Within a lease every
        live process has had its rounds (a third of a lease apart; the first may fail on
        connections the outage broke) to renew its own."""
        now = utcnow()
        lapsed = [name.removeprefix("process:")
                  for name, _ in await self.store.lapsed_leases("process:", now)]
        orphans = await self.store.intent_processes(now - timedelta(seconds=self.horizon))
        for process in orphans:
            if process not in lapsed and await self.store.lease_holder(
                    f"process:{process}") is None:
                lapsed.append(process)
        return [p for p in lapsed if p != self.process]

    async def _lost_records(self) -> None:
        """This process's entries journaled since the last look, and older than a write
        and its record may take, that no audit record names: appended again, durably
        (the store lost them in a crash or a failover).

        Looked for only after the store's server changed (``incarnation``): a record
        can be lost only with the server that took it, and the look reads every entry
        of the window and every audit record of a minute and more, which every round
        (a third of ``executor_lease``) would cost a busy gateway dearly. A change seen
        now may have lost the records of any entry journaled up to now."""
        now = utcnow()
        incarnation = await self.store.incarnation()
        if incarnation != self._incarnation:
            self._incarnation, self._suspect_to = incarnation, now
        before = now - timedelta(seconds=self.horizon + self.lease_seconds)
        if before <= self._audited_to:
            return
        if self._audited_to >= self._suspect_to:  # no change since: nothing was lost
            self._audited_to = before
            return
        before = min(before, self._suspect_to)
        lost = await self.store.unaudited(self.process, self._audited_to, before)
        for entry in lost:
            await self.store.append_audit(*_record(entry, LOST_HERE))
        if lost:
            log.error("the store lost the audit records of %d writes of this process (a "
                      "database crash or failover?); appended again from the journal: %s",
                      len(lost), ", ".join(e.id for e in lost[:20]))
        self._audited_to = before

    async def recover(self, process: str) -> None:
        """Settle dead ``process``'s writes, if this process is the one to take it over."""
        name = f"process:{process}"
        if not await self.store.take_lease(name, self.process, utcnow(), self.lease_seconds):
            return  # alive again, or another process is recovering it
        if self.resends is not None:  # before its intents become unknown, or they are not
            await self.resends.strand(process)  # found: marked as left, may have landed
        unknown, unaudited = await self.store.recover_process(process, utcnow())
        if unknown:
            log.error("process %s stopped with %d writes in flight; journaled unknown: %s",
                      process, len(unknown), ", ".join(unknown[:20]))
        if unaudited:
            await self.store.append_audit_many([
                _record(e, f"appended from the journal: the record was lost with process "
                           f"{process}") for e in unaudited])
            log.warning("appended %d audit records lost with process %s", len(unaudited),
                        process)
        await self.store.release_lease(name, self.process)


LOST_HERE = "appended from the journal: the store lost the record (a crash or a failover)"


def _record(entry: JournalEntry, why: str) -> tuple[str, str, dict[str, Any], Any]:
    detail = {"request_id": entry.request_id, "method": entry.method,
              "path": f"/{entry.upstream}{entry.path}", "status": entry.status,
              "journal": entry.id, "state": entry.state.value, "at": iso(entry.at),
              "recovered": why}
    if entry.approval:
        detail["approval"] = entry.approval.get("id")
    return entry.agent, f"call.{entry.decision}", detail, utcnow()
