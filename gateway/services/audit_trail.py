"""Every decision on a mutating call, appended to the audit hash chain.

One chained append per write would serialize the proxy on the audit lock, so
decisions are queued and appended in batches, one transaction each, by a
background task. The queue is bounded: when the store falls behind, callers
wait for room (backpressure) rather than lose records; ``stop`` drains it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from gateway.core.model import utcnow
from gateway.deadline import cancelled, within
from gateway.ports import AuditStore

log = logging.getLogger("gateway.audit")
Item = tuple[str, str, dict[str, Any], datetime]


class AuditTrail:
    def __init__(self, store: AuditStore, batch: int = 500, capacity: int = 10000,
                 linger: float = 0.004) -> None:
        self._store = store
        self._linger = linger
        self._batch = batch
        self._queue: asyncio.Queue[Item] = asyncio.Queue(capacity)
        self._task: asyncio.Task[None] | None = None
        self.appended = 0

    async def record(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        item = (actor, action, detail, utcnow())
        try:  # room (the usual case): no Queue.put coroutine
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            await self._queue.put(item)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def flush(self) -> None:
        """Until everything recorded so far is in the chain."""
        await self._queue.join()

    async def stop(self) -> None:
        if self._task is None:
            return
        try:
            await within(self.flush(), 10)
        except TimeoutError:
            log.error("audit trail: %d decisions not appended at shutdown", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            if self._queue.empty() and self._linger > 0:
                # company for a lone record: calls one after the other share a
                # transaction (a chained append is several round trips)
                await asyncio.sleep(self._linger)
            while len(items) < self._batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            await self._append(items)
            for _ in items:
                self._queue.task_done()

    async def _append(self, items: list[Item]) -> None:
        delay = 0.1
        while True:
            try:
                await self._store.append_audit_many(items)
                self.appended += len(items)
                return
            except Exception:
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                log.exception("audit trail: appending %d decisions failed; retrying", len(items))
                await asyncio.sleep(delay)  # back off while the store recovers
                delay = min(delay * 2, 5.0)
