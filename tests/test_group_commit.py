"""``GroupCommit``: what comes while a batch commits goes in the next; a failed batch is
tried item by item; ``submit`` hands back a future (no task per item), settled in the
order the items came."""

from __future__ import annotations

import asyncio

from gateway.group_commit import GroupCommit


class Rows:
    """A commit that holds each batch until ``gate`` is set; refuses rows named 'bad'."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()  # a batch is under way
        self.batches: list[list[str]] = []

    async def commit(self, rows: list[str]) -> list[str]:
        self.batches.append(rows)
        self.arrived.set()
        await self.gate.wait()
        if "bad" in rows:
            raise ValueError("duplicate id")
        return [row.upper() for row in rows]


async def test_what_comes_while_a_batch_commits_goes_in_the_next() -> None:
    rows = Rows()
    commit = GroupCommit(rows.commit)
    first = commit.submit("a")
    async with asyncio.timeout(10):
        await rows.arrived.wait()  # the drain holds ["a"]
    later = [commit.submit(row) for row in ("b", "c")]
    rows.gate.set()
    assert [await f for f in (first, *later)] == ["A", "B", "C"]
    assert rows.batches == [["a"], ["b", "c"]] and (commit.batches, commit.items) == (2, 3)


async def test_one_bad_row_fails_its_own_caller_only() -> None:
    rows = Rows()
    rows.gate.set()
    commit = GroupCommit(rows.commit)
    futures = [commit.submit(row) for row in ("a", "bad", "c")]
    await asyncio.wait(futures)
    assert futures[0].result() == "A" and futures[2].result() == "C"
    assert isinstance(futures[1].exception(), ValueError)
    assert rows.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_futures_settle_in_the_order_their_items_came() -> None:
    rows = Rows()
    rows.gate.set()
    commit = GroupCommit(rows.commit, limit=2)
    order: list[str] = []
    for row in ("a", "bad", "c", "d", "e"):
        commit.submit(row).add_done_callback(lambda f, row=row: order.append(row))
    last = commit.submit("f")
    await asyncio.wait([last])  # the last one done: every one before it is too
    assert order == ["a", "bad", "c", "d", "e"]
    assert rows.batches[0] == ["a", "bad"] and rows.batches[-1] == ["e", "f"]


async def test_a_cancelled_drain_fails_what_it_holds_and_the_next_item_starts_anew() -> None:
    rows = Rows()
    commit = GroupCommit(rows.commit)
    held = commit.submit("a")
    async with asyncio.timeout(10):
        await rows.arrived.wait()
    queued = commit.submit("b")
    assert commit._draining is not None
    commit._draining.cancel()
    await asyncio.wait([held, queued])
    assert all(isinstance(f.exception(), asyncio.CancelledError) for f in (held, queued))
    rows.gate.set()
    assert await commit("c") == "C"
