"""A write that may have landed (sent, then no answer) answers 502/504, and SDKs resend
a 5xx by themselves: the change lands twice, with nothing the upstream could dedupe it
by. Such an answer now tells the SDKs that read it not to resend (``x-should-retry``,
openai-python and every Stainless-made SDK; ``stripe-should-retry``, Stripe's). A real
uvicorn on port 0, a real upstream that applies the write and never answers, and the
real openai-python client with its default retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway.server import server_for
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import AGENT_KEY, policy_text, served, started_gateway

NO_RESEND = {"x-should-retry": "false", "stripe-should-retry": "false"}


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream({"/items/x": {"name": "x", "v": 1}}) as up:
        yield up


@asynccontextmanager
async def gateway_url(tmp_path: Path, store_url: str, upstream: FaultUpstream,
                      extra: str = "") -> AsyncIterator[str]:
    policies = {"up.yaml": policy_text(upstream.url, RULES, upstream="up",
                                       extra="timeout: 1\n" + extra)}
    async with started_gateway(tmp_path, store_url, policies) as gw:
        async with served(server_for(gw.gateway.proxy_app(), gw.gateway.settings)) as port:
            yield f"http://127.0.0.1:{port}/up"


async def test_an_sdk_does_not_resend_a_write_that_may_have_landed(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    upstream.hang("PATCH", "/items/x", apply=True)  # applied, never answered
    async with gateway_url(tmp_path, store_url, upstream) as base:
        client = openai.OpenAI(api_key=AGENT_KEY, base_url=base)  # two retries by default
        with pytest.raises(openai.APIStatusError) as raised:
            await asyncio.to_thread(client.patch, "/items/x", body={"v": 2},
                                    cast_to=httpx.Response)
        upstream.release()
    assert raised.value.status_code == 504
    assert {k: raised.value.response.headers.get(k) for k in NO_RESEND} == NO_RESEND
    assert upstream.received("PATCH", "/items/x") == [{"v": 2}]  # once, not three times


async def test_a_write_the_upstream_dedupes_by_the_agents_key_may_be_resent(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """With the policy's idempotency header sent by the agent itself, a resend carries the
    same key and the upstream dedupes it: nothing is said. Without the agent's own key
    (the gateway's is the entry id, new for a resend), or on a read, the same rules."""
    upstream.hang("PATCH", "/items/x", apply=True, count=2)
    async with gateway_url(tmp_path, store_url, upstream,
                           extra="idempotency: {header: Idempotency-Key}\n") as base:
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     headers={"X-Gateway-Key": AGENT_KEY}) as agent:
            keyed = await agent.patch("/items/x", json={"v": 2},
                                      headers={"Idempotency-Key": "k-1"})
            unkeyed = await agent.patch("/items/x", json={"v": 3})
            upstream.hang("GET", "/items/x")
            read = await agent.get("/items/x")
            upstream.release()
    assert (keyed.status_code, unkeyed.status_code, read.status_code) == (504, 504, 504)
    assert "x-should-retry" not in keyed.headers and "x-should-retry" not in read.headers
    assert {k: unkeyed.headers.get(k) for k in NO_RESEND} == NO_RESEND
