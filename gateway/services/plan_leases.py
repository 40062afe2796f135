"""One executor per rollback plan across every process: the plan's lease.

A lease named ``plan:<id>`` (``Store.take_lease``) is taken before a plan is
applied and renewed every third of its length while it runs; it is dropped
when the run ends. A process that dies stops renewing, so its plans' leases
lapse and ``Rollbacks.resume_unfinished`` in another process takes them over,
one process per plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.core.model import utcnow
from gateway.deadline import cancelled
from gateway.ports import LeaseStore

log = logging.getLogger("gateway.rollback")


def lease_name(plan_id: str) -> str:
    return f"plan:{plan_id}"


class PlanLeases:
    def __init__(self, store: LeaseStore, owner: str, seconds: float) -> None:
        self.store = store
        self.owner = owner
        self.seconds = seconds

    async def take(self, plan_id: str) -> bool:
        """Take (or renew) the plan's lease: True for its one holder."""
        return await self.store.take_lease(lease_name(plan_id), self.owner, utcnow(),
                                           self.seconds)

    async def release(self, plan_id: str) -> None:
        await self.store.release_lease(lease_name(plan_id), self.owner)

    async def lapsed(self, plan_id: str) -> bool:
        """Nobody holds it, or its holder stopped renewing it."""
        holder = await self.store.lease_holder(lease_name(plan_id))
        return holder is None or holder[1] < utcnow()

    @contextlib.asynccontextmanager
    async def renewed(self, plan_id: str) -> AsyncIterator[asyncio.Event]:
        """Renew the (taken) lease while the block runs; the event is set if it was lost
        (another process took it over: the store was out of reach for its whole length)."""
        lost = asyncio.Event()

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.seconds / 3)
                try:
                    if not await self.take(plan_id):
                        lost.set()
                        return
                except Exception:  # the store is down: keep trying while the lease lasts
                    if cancelled():  # a cancel a driver turned into an error: stop
                        raise
                    log.warning("could not renew the lease of rollback plan %s", plan_id)

        renewer = asyncio.create_task(renew())
        try:
            yield lost
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.release(plan_id)
