"""Real parts for in-process tests: uvicorn upstreams on port 0 and a started Gateway.

The gateway under test talks to its upstreams over real sockets through its
production aiohttp client; only the agent and operator sides are driven in
process (httpx's ASGITransport).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.app import Gateway
from gateway.settings import Settings

AGENT_KEY = "agent-key-1"
OTHER_KEY = "agent-key-2"
TOKENS = {"viewer": "tok-viewer", "approver": "tok-approver", "admin": "tok-admin"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@asynccontextmanager
async def serve_app(app: Any, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:0; yields its base URL.
    (``lifespan="on"`` for apps that start things then, like the MCP SDK's servers.)"""
    server = uvicorn.Server(uvicorn.Config(app, lifespan=lifespan, log_level="warning",
                                           access_log=False, loop="none",
                                           timeout_graceful_shutdown=5))
    async with served(server) as port:
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def served(server: uvicorn.Server) -> AsyncIterator[int]:
    """Run ``server`` on 127.0.0.1:0 in this loop; yields its port once it is started."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY under asyncio
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    started = asyncio.Event()
    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets=sockets)
        started.set()

    server.startup = startup  # type: ignore[method-assign]
    exiting = asyncio.Event()

    async def main_loop() -> None:  # uvicorn's polls should_exit every 0.1 s: wait instead
        await server.on_tick(0)
        await exiting.wait()

    server.main_loop = main_loop  # type: ignore[method-assign]
    original_shutdown = server.shutdown

    async def shutdown(sockets: Any = None) -> None:
        state = server.server_state
        if state.connections or state.tasks:  # uvicorn's own: ask them to close, then wait
            await original_shutdown(sockets=sockets)
            return
        for listening in server.servers:  # nothing to drain: without uvicorn's 0.1 s pause
            listening.close()
        for listening in server.servers:
            await listening.wait_closed()
        await server.lifespan.shutdown()

    server.shutdown = shutdown  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await started.wait()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        exiting.set()
        await task
        sock.close()


async def until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll an async or plain predicate until it is truthy; fail after ``timeout``
    (for state another task or process changes, where there is no event to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.02)  # the poll interval; the deadline bounds the wait
    raise AssertionError(f"timed out waiting for {what}")


def poll(predicate: Callable[[], Any], what: str, timeout: float = 30.0,
         interval: float = 0.02) -> Any:
    """``until`` for threads and plain tests: ``predicate()`` until truthy (state another
    process or thread changes, where there is nothing to wait on); fail after ``timeout``.
    ``interval`` is how often to look, never what a test measures."""
    deadline = time.monotonic() + timeout
    waiter = threading.Event()  # never set: a wait that cannot be mistaken for a sync point
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        waiter.wait(interval)
    raise AssertionError(f"timed out waiting for {what}")


def policy_text(base_url: str, rules: str, *, upstream: str = "crm", default: str = "deny",
                extra: str = "") -> str:
    return (f"version: 1\nupstream: {upstream}\nbase_url: {base_url}\ndefault: {default}\n"
            f"{extra}rules:\n" + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n")


CRM_RULES = """
- id: read-all
  match: {methods: [GET, HEAD], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH, PUT], path: "/customers/{id}"}
  action: allow
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
- id: bot-deletes
  match: {methods: [DELETE], path: "/customers/{id}", agents: [bot]}
  action: allow
- id: big-deals
  match: {methods: [POST], path: "/deals", when: "request.body.amount > 10000"}
  action: deny
- id: deals
  match: {methods: [POST], path: "/deals"}
  action: allow
- id: no-deletes
  match: {methods: [DELETE], path: "/**"}
  action: deny
"""


@dataclass
class Harness:
    gateway: Gateway
    agent: httpx.AsyncClient
    policies_dir: Path

    @functools.cached_property
    def admin(self) -> httpx.AsyncClient:
        """The operator API, built on first use: most rows never call it, and building
        the admin app (its routes and their schemas) costs more than starting the gateway."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(self.gateway.admin_app()),
                                 base_url="http://admin")

    async def aclose(self) -> None:
        await self.agent.aclose()
        if "admin" in self.__dict__:
            await self.admin.aclose()

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"}

    async def engage(self, **body: Any) -> httpx.Response:
        return await self.admin.post("/v1/killswitch/engage", json={"reason": "test", **body},
                                     headers=self.as_role("approver"))

    async def release(self, **body: Any) -> httpx.Response:
        return await self.admin.post("/v1/killswitch/release", json={"reason": "ok", **body},
                                     headers=self.as_role("admin"))

    async def journal(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.admin.get("/v1/journal", params=params,
                                        headers=self.as_role("viewer"))
        assert response.status_code == 200, response.text
        return response.json()["items"]


def settings_for(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    defaults: dict[str, Any] = dict(
        database_url=database_url, policies_dir=tmp_path / "policies",
        agents=[{"name": "bot", "key_sha256": sha(AGENT_KEY)},
                {"name": "other", "key_sha256": sha(OTHER_KEY)}],
        operators=[{"name": role, "role": role, "token_sha256": sha(token)}
                   for role, token in TOKENS.items()])
    return Settings(**{**defaults, **overrides})


SQLITE = "sqlite+aiosqlite:///"
_template: Path | None = None  # one migrated SQLite store per test process


async def fresh_sqlite(database_url: str) -> None:
    """A SQLite store that does not exist yet starts as a copy of one migrated once in
    this process: building the schema is most of an in-process gateway's start. (The
    migrations themselves are tested in ``tests/store`` and by every real process.)"""
    global _template
    if not database_url.startswith(SQLITE):
        return
    target = Path(database_url.removeprefix(SQLITE))
    if target.exists() or not target.parent.is_dir():
        return
    if _template is None:
        from gateway.store.sql import open_store
        made = Path(tempfile.mkdtemp(prefix="gateway-template-")) / "gateway.db"
        atexit.register(shutil.rmtree, made.parent, True)
        store = open_store(SQLITE + str(made))
        await store.start()
        await store.close()
        _template = made
    shutil.copyfile(_template, target)
    wal = _template.with_name(_template.name + "-wal")
    if wal.exists():  # not checkpointed at close: its pages are part of the store
        shutil.copyfile(wal, target.with_name(target.name + "-wal"))


@asynccontextmanager
async def started_gateway(tmp_path: Path, database_url: str, policies: dict[str, str],
                          store: Any = None, client: Any = None,
                          **overrides: Any) -> AsyncIterator[Harness]:
    if store is None:
        await fresh_sqlite(database_url)
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    for name, text in policies.items():
        (directory / name).write_text(text)
    gateway = Gateway(settings_for(tmp_path, database_url, **overrides), store=store,
                      client=client)
    await gateway.start()
    agent = httpx.AsyncClient(transport=httpx.ASGITransport(gateway.proxy_app()),
                              base_url="http://gateway", headers={"X-Gateway-Key": AGENT_KEY})
    harness = Harness(gateway, agent, directory)
    try:
        yield harness
    finally:
        await harness.aclose()
        await gateway.stop()


