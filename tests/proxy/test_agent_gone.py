"""An agent that gives up on a write while it waits (its journal intent held up by a
store that fails over) gets it retried by its SDK; the gateway must not then send the
first one too. A real uvicorn on port 0 (the connection's close is what is seen), a
real upstream, a real store whose first intent waits until released."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.model import JournalEntry
from gateway.server import server_for
from gateway.store.sql import SqlStore
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import AGENT_KEY, policy_text, served, started_gateway, until


class FailingOver(SqlStore):
    """Holds the first intent until ``back`` is set, as a store between primaries does."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.waiting, self.back = asyncio.Event(), asyncio.Event()
        self._first = True

    async def journal_intent(self, entry: JournalEntry, *, unless_frozen: bool = True) -> bool:
        if self._first:
            self._first = False
            self.waiting.set()
            await self.back.wait()
        return await super().journal_intent(entry, unless_frozen=unless_frozen)


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream({"/items/x": {"name": "x", "v": 1}}) as up:
        yield up


async def test_a_write_whose_agent_left_while_it_waited_is_not_sent(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    store = FailingOver(store_url)
    policies = {"up.yaml": policy_text(upstream.url, RULES, upstream="up")}
    async with started_gateway(tmp_path, store_url, policies, store=store) as gw:
        server = server_for(gw.gateway.proxy_app(), gw.gateway.settings)
        async with served(server) as port, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}/up", timeout=30,
                headers={"X-Gateway-Key": AGENT_KEY}) as agent:
            first = asyncio.create_task(agent.patch("/items/x", json={"v": 2}))
            async with asyncio.timeout(15):
                await store.waiting.wait()  # its intent waits for the store
            first.cancel()  # the agent's timeout: its connection is closed
            await asyncio.gather(first, return_exceptions=True)
            await until(lambda: not server.server_state.connections, "the agent gone")
            store.back.set()
            retried = await agent.patch("/items/x", json={"v": 2})  # its SDK retries
            assert retried.status_code == 200, retried.text
        entries = await _entries(gw)
    assert upstream.received("PATCH", "/items/x") == [{"v": 2}]  # once, not twice
    assert sorted(e["state"] for e in entries) == ["completed", "failed"]
    (left,) = [e for e in entries if e["state"] == "failed"]
    assert "closed its connection" in (left.get("error") or "")


async def _entries(gw: Any) -> list[dict[str, Any]]:
    async def two() -> list[dict[str, Any]] | None:
        response = await gw.admin.get("/v1/journal", headers=gw.as_role("viewer"))
        items = response.json()["items"]
        return items if len(items) == 2 and all(e["state"] != "intent" for e in items) \
            else None
    return await until(two, "both entries settled")
