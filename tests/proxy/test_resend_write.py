"""An agent whose own timeout is shorter than the upstream's answer closes its
connection while its write is on the way, and its SDK sends the write again. Before,
the gateway sent it again: a create landed twice, and the upstream could not dedupe it
(the gateway's idempotency key is the journal entry's id, new for the resend). Now the
write its agent left is marked, and the resend waits for the first try's answer and
gets it, or is told that the first try may have landed: one write upstream.
A real uvicorn on port 0 (the connection's close is what is seen), a real upstream
that holds the write, and, for the processes sharing a store, two gateways on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.core.model import utcnow
from gateway.core.resend import ANSWERED, LeftWrite, key_of
from gateway.server import server_for
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import AGENT_KEY, Harness, policy_text, served, started_gateway, until

CREATE = {"name": "refund-7", "amount": 70}


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream({"/items/x": {"name": "x", "v": 1}}) as up:
        yield up


@asynccontextmanager
async def gateways(tmp_path: Path, store_url: str, upstream: FaultUpstream, count: int = 1,
                   extra: str = "") -> AsyncIterator[list[tuple[Harness, str, Any]]]:
    """``count`` gateways on one store, each served by a real uvicorn: (harness, the
    agent's base URL, the server)."""
    policies = {"up.yaml": policy_text(upstream.url, RULES, upstream="up", extra=extra)}
    async with AsyncExitStack() as stack:
        out = []
        for n in range(count):
            (tmp_path / f"gw{n}").mkdir(parents=True)
            gw = await stack.enter_async_context(
                started_gateway(tmp_path / f"gw{n}", store_url, policies))
            server = server_for(gw.gateway.proxy_app(), gw.gateway.settings)
            port = await stack.enter_async_context(served(server))
            out.append((gw, f"http://127.0.0.1:{port}/up", server))
        yield out


def agent(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=30, headers={"X-Gateway-Key": AGENT_KEY})


async def leave_on_the_way(base: str, upstream: FaultUpstream, server: Any) -> None:
    """The agent sends the create, and gives up while the upstream holds it (its
    connection's close seen by the gateway)."""
    async with agent(base) as client:
        first = asyncio.create_task(client.post("/items", json=CREATE))
        await asyncio.to_thread(upstream.wait_for, "POST", "/items")
        first.cancel()  # the agent's timeout: its connection is closed
        await asyncio.gather(first, return_exceptions=True)
    await until(lambda: not server.server_state.connections, "the agent gone")


async def rejoined(gw: Harness) -> list[dict[str, Any]]:
    records = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"),
                                  params={"limit": 500})).json()["items"]
    return [r for r in records if r["action"] == "call.rejoined"]


async def test_the_resend_of_a_write_left_on_its_way_gets_the_first_answer(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    upstream.gate("POST", "/items")  # held until released, then created and answered
    async with gateways(tmp_path, store_url, upstream) as [(gw, base, server)]:
        await leave_on_the_way(base, upstream, server)
        async with agent(base) as client:
            resend = asyncio.create_task(client.post("/items", json=CREATE))
            await until(lambda: _claimed(gw), "the resend waiting on the first try")
            upstream.release()
            answered = await resend
        assert answered.status_code == 201, answered.text
        assert answered.json() == {**CREATE, "id": "1"}  # the first try's answer
        (record,) = await until(lambda: rejoined(gw), "the rejoin audited")
        (entry,) = await gw.journal()
        assert record["detail"]["journal"] == entry["id"] and entry["state"] == "completed"
        verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
    assert upstream.received("POST", "/items") == [CREATE]  # once
    assert [p for p in upstream.resources if p.startswith("/items/") and p != "/items/x"] == [
        "/items/1"]
    assert verified["ok"] is True


async def test_a_resend_of_a_write_left_while_its_outcome_was_read_gets_the_first_answer(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """The upstream answers the PATCH with no body, so the gateway reads the resource
    after it for the journal before the agent has its answer; the agent gives up during
    that read. Before, only the send was watched: the resend was sent again."""
    patch = upstream.gate("PATCH", "/items/x", empty=True)
    async with gateways(tmp_path, store_url, upstream) as [(gw, base, server)]:
        async with agent(base) as client:
            first = asyncio.create_task(client.patch("/items/x", json={"v": 2}))
            await asyncio.to_thread(upstream.wait_for, "PATCH", "/items/x")
            reading = upstream.gate("GET", "/items/x")  # the capture was before the PATCH
            patch.released.set()  # applied, answered 204: the gateway reads it after
            await asyncio.to_thread(upstream.wait_for, "GET", "/items/x", 2)
            first.cancel()  # the agent's timeout: its connection is closed
            await asyncio.gather(first, return_exceptions=True)
        await until(lambda: not server.server_state.connections, "the agent gone")
        async with agent(base) as client:
            resend = asyncio.create_task(client.patch("/items/x", json={"v": 2}))
            await until(lambda: _claimed(gw), "the resend waiting on the first try")
            reading.released.set()
            answered = await resend
        assert answered.status_code == 204, answered.text  # the first try's answer
        assert len(await until(lambda: rejoined(gw), "the rejoin audited")) == 1
    assert upstream.received("PATCH", "/items/x") == [{"v": 2}]  # once


async def _claimed(gw: Harness) -> bool:
    (entry,) = await gw.journal()
    left = await gw.gateway.store.left_write(entry["id"])
    return left is not None and left.state != ANSWERED and await _rejoined_at(gw, entry["id"])


async def _rejoined_at(gw: Harness, entry_id: str) -> bool:
    """Whether a resend has claimed the mark (a second claim finds none)."""
    store: Any = gw.gateway.store
    from sqlalchemy import text
    async with store._engine.connect() as connection:
        row = (await connection.execute(text(
            "SELECT rejoined_at FROM left_writes WHERE entry_id = :id"), {"id": entry_id})).first()
    return row is not None and row[0] is not None


async def test_a_resend_after_the_left_write_was_answered_gets_its_answer(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    upstream.gate("POST", "/items")
    async with gateways(tmp_path, store_url, upstream) as [(gw, base, server)]:
        await leave_on_the_way(base, upstream, server)
        upstream.release()
        await answer_kept(gw)
        store, looked = gw.gateway.store, []
        real = store.rejoin_write

        async def counted(*args: Any) -> Any:
            looked.append(args[0])
            return await real(*args)

        store.rejoin_write = counted  # type: ignore[method-assign]
        async with agent(base) as client:
            resend = await client.post("/items", json=CREATE)
            assert resend.status_code == 201 and resend.json()["id"] == "1", resend.text
            again = [await client.post("/items", json=CREATE) for _ in range(3)]
            assert [a.json()["id"] for a in again] == ["2", "3", "4"]  # calls of their own
        assert len(looked) == 2  # the resend, and the first after it: then nothing is read
        assert len(await gw.journal()) == 4
        assert len(await until(lambda: rejoined(gw), "the rejoin audited")) == 1
    assert upstream.received("POST", "/items") == [CREATE] * 4  # the first, and `again`


async def answer_kept(gw: Harness) -> None:
    (entry,) = await until(gw.journal, "the entry")

    async def settled() -> bool:
        left = await gw.gateway.store.left_write(entry["id"])
        return left is not None and left.state == ANSWERED

    await until(settled, "the first try's answer kept")


async def test_a_resend_after_a_restart_gets_the_first_answer(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """The gateway restarts (a deploy) between the agent leaving and its resend: the new
    process reads the marks at its start."""
    upstream.gate("POST", "/items")
    async with gateways(tmp_path / "before", store_url, upstream) as [(gw, base, server)]:
        await leave_on_the_way(base, upstream, server)
        upstream.release()
        await answer_kept(gw)
    async with gateways(tmp_path / "after", store_url, upstream) as [(gw, base, _)]:
        async with agent(base) as client:
            resend = await client.post("/items", json=CREATE)
        assert resend.status_code == 201 and resend.json()["id"] == "1", resend.text
    assert upstream.received("POST", "/items") == [CREATE]


async def test_a_resend_of_a_write_that_may_have_landed_is_not_sent(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """The first try is applied and never answered (journaled ``unknown``): its resend is
    told so, 409 ``already_sent``, with the headers that stop SDKs resending it."""
    upstream.hang("POST", "/items", apply=True)
    async with gateways(tmp_path, store_url, upstream, extra="timeout: 1\n") as [
            (gw, base, server)]:
        await leave_on_the_way(base, upstream, server)
        async with agent(base) as client:
            resend = await client.post("/items", json=CREATE)
        assert resend.status_code == 409, resend.text
        assert resend.json()["error"]["code"] == "already_sent"
        assert resend.headers["x-should-retry"] == "false"
        (entry,) = await gw.journal()
        assert entry["state"] == "unknown" and resend.json()["error"]["journal"] == entry["id"]
    upstream.release()
    assert upstream.received("POST", "/items") == [CREATE]


async def test_an_sdk_whose_timeout_is_shorter_than_the_upstream_sends_once(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """openai-python as it comes (two retries), with a timeout shorter than the upstream's
    answer: each try times out and is resent. Before, each resend was sent: three
    refunds. Now the upstream gets one, and the SDK, once the answer is in, gets it."""
    fault = upstream.gate("POST", "/items")
    async with gateways(tmp_path, store_url, upstream) as [(gw, base, _)]:
        client = openai.OpenAI(api_key=AGENT_KEY, base_url=base, timeout=0.5, max_retries=4)
        attempt = asyncio.create_task(asyncio.to_thread(
            client.post, "/items", body=CREATE, cast_to=httpx.Response))
        await asyncio.to_thread(upstream.wait_for, "POST", "/items")
        await until(lambda: _claimed(gw), "a retry waiting on the first try", 30)
        fault.released.set()
        answered = await attempt
        assert answered.status_code == 201 and answered.json()["id"] == "1"
        assert len(await gw.journal()) == 1
    assert upstream.received("POST", "/items") == [CREATE]


async def test_a_resend_reaching_another_process_gets_the_first_answer(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """Two gateways on one store (SO_REUSEPORT workers, or replicas): the agent leaves the
    first, its resend reaches the second, which the bus told of the mark."""
    upstream.gate("POST", "/items")
    async with gateways(tmp_path, store_url, upstream, count=2) as [
            (first, base, server), (second, other, _)]:
        await leave_on_the_way(base, upstream, server)
        told = second.gateway.pipeline.resends._known  # the bus's hint, heard
        await until(lambda: told, "the other process told of the mark")
        async with agent(other) as client:
            resend = asyncio.create_task(client.post("/items", json=CREATE))
            await until(lambda: _claimed(first), "the resend waiting on the first try")
            upstream.release()
            answered = await resend
        assert answered.status_code == 201 and answered.json()["id"] == "1", answered.text
        assert len(await until(lambda: rejoined(second), "the rejoin audited")) == 1
    assert upstream.received("POST", "/items") == [CREATE]


async def test_a_resend_of_a_write_whose_process_died_on_its_way_is_not_sent(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """The process sending the first try died before it settled: its mark says
    ``sending`` for good. Once the longest a write may take has passed, the resend is told
    the first try may have landed, not left waiting nor sent."""
    body = b'{"name":"refund-7","amount":70}'
    key = key_of("bot", None, "up", "POST", "/items", "", body, None)
    async with gateways(tmp_path, store_url, upstream) as [(gw, _, _)]:
        await gw.gateway.store.leave_write(LeftWrite(
            "f" * 32, key, "bot", utcnow() - timedelta(minutes=10)))  # a dead process's
        gw.gateway.pipeline.resends.heard({"type": "left", "key": key})  # the bus's hint
        resend = await gw.agent.post("/up/items", content=body,
                                     headers={"content-type": "application/json"})
        assert resend.status_code == 409, resend.text
        assert resend.json()["error"] | {"message": ""} == {
            "code": "already_sent", "journal": "f" * 32, "message": ""}
        other = await gw.agent.post("/up/items", content=b'{"name":"refund-8"}',
                                    headers={"content-type": "application/json"})
        assert other.status_code == 201  # another write: sent
    assert upstream.received("POST", "/items") == [{"name": "refund-8"}]
