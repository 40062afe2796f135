"""An outcome the store refuses once is retried until it is saved (issue 16 item 10:
after database restarts, entries stayed ``intent`` for good although the agent
had its 200).

A real ``gateway serve`` relays a PATCH to an upstream served by this test,
which holds the PATCH while the test makes the store fail: on PostgreSQL the
gateway's connections are cut and new ones refused (a restart, as the gateway
sees it), on SQLite another connection holds the write lock past the busy
timeout. The agent gets its answer, the first outcome write fails, and once
the store is back the entry must read ``completed``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_SERVER
from tests.e2e.procs import GATEWAY, READY, write_settings
from tests.harness import AGENT_KEY, TOKENS, policy_text, serve_app, until

AGENT = {"X-Gateway-Key": AGENT_KEY}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
RULES = """
- id: all
  match: {path: "/**"}
  action: allow
"""


class HeldUpstream:
    """``GET``/``PATCH /items/1``; a PATCH is answered only once ``release`` is set."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.value = {"id": 1, "v": 1}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "PATCH":
            self.arrived.set()
            await self.release.wait()
            self.value = {**self.value, **json.loads(body)}
        payload = json.dumps(self.value).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


async def break_postgres(url: str) -> Any:
    """Cut the gateway's connections to its database and refuse new ones; the
    returned coroutine function lets them in again."""
    name = make_url(url).database
    admin = await asyncpg.connect(POSTGRES_SERVER)
    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> pg_backend_pid()", name)

    async def heal() -> None:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    return heal


async def break_sqlite(url: str) -> Any:
    """Hold the database's write lock from another connection."""
    holder = sqlite3.connect(make_url(url).database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def heal() -> None:
        holder.execute("COMMIT")
        holder.close()
    return heal


async def test_an_outcome_the_store_refused_is_saved_once_it_is_back(
        tmp_path: Path, store_url: str) -> None:
    upstream = HeldUpstream()
    async with serve_app(upstream) as base_url:
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies" / "items.yaml").write_text(
            policy_text(base_url, RULES, upstream="items"))
        log = tmp_path / "gateway.log"
        with log.open("w") as out:
            gateway = subprocess.Popen(
                [*GATEWAY, "serve", "--config", str(write_settings(tmp_path, store_url))],
                stdout=out, stderr=subprocess.STDOUT)
        ready = await until(lambda: READY.search(log.read_text()), "the gateway to start", 60)
        proxy, admin = ready.group(1), ready.group(2)
        heal = None
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                write = asyncio.create_task(client.patch(
                    f"{proxy}/items/items/1", json={"v": 2}, headers=AGENT))
                await asyncio.wait_for(upstream.arrived.wait(), 30)  # the intent is committed
                heal = await (break_postgres if store_url.startswith("postgresql")
                              else break_sqlite)(store_url)
                upstream.release.set()
                answer = await write
                assert answer.status_code == 200 and answer.json()["v"] == 2
                await until(lambda: "could not journal the outcome" in log.read_text(),
                            "the first outcome write to fail", 30)
                await heal()
                heal = None

                async def completed() -> bool:
                    listed = await client.get(f"{admin}/v1/journal", headers=ADMIN)
                    if listed.status_code != 200:
                        return False
                    items = listed.json()["items"]
                    return [(e["state"], e["status"]) for e in items] == [("completed", 200)]

                await until(completed, "the outcome saved after the store came back", 30)
        finally:
            if heal is not None:
                await heal()
            gateway.send_signal(signal.SIGTERM)
            await asyncio.to_thread(gateway.wait, 30)
