"""Group commit: concurrent callers share one transaction.

A caller hands one item (a journal intent, an outcome) and waits for its own
result. Items that arrive while a batch is being committed wait together and
go in the next one, so under load one transaction carries many writes and at
rest one write pays for one transaction, never for a timer. A batch that
fails is tried again item by item, so one bad row (a duplicate id) fails its
own caller and nobody else's. A drain cancelled (the process stopping) fails
what it holds with the cancellation: nothing is left waiting for it.

>>> commit = GroupCommit(insert_rows)     # doctest: +SKIP
>>> inserted = await commit(row)          # doctest: +SKIP
>>> commit.submit(row).add_done_callback(saved)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, commit: Callable[[list[T]], Awaitable[list[R]]], limit: int = 512) -> None:
        self._commit = commit
        self._limit = limit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0  # how many transactions carried how many items: the batching at work
        self.items = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` for the next batch; its future settles once it is committed (or
        failed). Futures settle in the order their items came, so whoever waits for the
        last one submitted waits for all before it."""
        # While a batch drains, the loop is the drain's: not looked up again (on
        # Python 3.11 every lookup is a getpid system call; two a write).
        draining = self._draining
        loop = draining.get_loop() if draining is not None else asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if draining is None:
            # A task, not a direct call: callers that become ready in the same
            # turn of the loop join this first batch.
            self._draining = loop.create_task(self._drain())
        return future

    async def __call__(self, item: T) -> R:
        return await self.submit(item)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = (self._waiting[:self._limit],
                                        self._waiting[self._limit:])
                await self._run(batch)
        except BaseException as exc:
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                settle(future, exc=exc)
            raise
        finally:
            self._draining = None

    async def close(self) -> None:
        """Until the batch under way (and those queued behind it) are committed."""
        if self._draining is not None:
            await asyncio.gather(self._draining, return_exceptions=True)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._commit([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                settle(batch[0][1], exc=exc)
                return
            for one in batch:  # find the culprit: each alone
                await self._run([one])
            return
        except BaseException as exc:  # cancelled: nobody is left to commit for them
            for _, future in batch:
                settle(future, exc=exc)
            raise
        for (_, future), result in zip(batch, results, strict=True):
            settle(future, result)


def settle(future: asyncio.Future[R], result: R | None = None,
            exc: BaseException | None = None) -> None:
    if future.done():  # its caller was cancelled; the write stands regardless
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
