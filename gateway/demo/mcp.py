"""The demo CRM's tools over MCP: the same in-memory CRM, served with the ``mcp`` SDK.

``create_server(crm)`` is an ``MCPServer`` (the SDK's FastMCP) whose tools
read and change ``crm``'s customers and deals through the CRM's own request
handling, so the REST face and the MCP face agree; ``create_app`` serves it
over streamable HTTP at ``/mcp``, with sessions or stateless; ``DemoApp`` puts
both faces of one CRM on one port (``gateway demo``, ``python -m gateway.demo``).

>>> from gateway.demo.crm import create_app as crm_app
>>> sorted(t.name for t in create_server(crm_app())._tool_manager.list_tools())[:3]
['create_customer', 'create_deal', 'delete_customer']
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette

from gateway.demo.crm import CRM, DemoError


def _call(crm: CRM, method: str, path: str, body: dict[str, Any] | None = None,
          query: str = "") -> Any:
    """One request to the CRM as a tool sees it: the resource, or an error the model reads."""
    data = json.dumps(body).encode() if body is not None else b""
    try:
        status, payload, _ = crm.handle(method, path, query.encode(),
                                        {"content-type": "application/json",
                                         **({"authorization": f"Bearer {crm.token}"}
                                            if crm.token else {})}, data)
    except DemoError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from None
    return payload if status != 204 else {"deleted": path.rsplit("/", 1)[-1]}


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def create_server(crm: CRM) -> MCPServer:
    server = MCPServer("demo-crm", instructions="Customers and deals of the demo CRM.")

    @server.tool()
    def get_customer(id: str) -> dict[str, Any]:
        """One customer by id (cus_1, cus_2, ...)."""
        return dict(_call(crm, "GET", f"/customers/{id}"))

    @server.tool()
    def search_customers(plan: str | None = None, email: str | None = None) -> dict[str, Any]:
        """Customers, optionally only those on a plan or with an email."""
        query = "&".join(f"{k}={v}" for k, v in _fields(plan=plan, email=email).items())
        return dict(_call(crm, "GET", "/customers", query=query))

    @server.tool()
    def update_customer(id: str, name: str | None = None, email: str | None = None,
                        plan: str | None = None, balance: int | None = None) -> dict[str, Any]:
        """Change some fields of a customer; the others stay."""
        return dict(_call(crm, "PATCH", f"/customers/{id}",
                          _fields(name=name, email=email, plan=plan, balance=balance)))

    @server.tool()
    def create_customer(name: str, email: str, plan: str = "free", balance: int = 0,
                        id: str | None = None) -> dict[str, Any]:
        """A new customer (a free id recreates exactly that one)."""
        return dict(_call(crm, "POST", "/customers",
                          _fields(id=id, name=name, email=email, plan=plan, balance=balance)))

    @server.tool()
    def delete_customer(id: str) -> dict[str, Any]:
        """Remove a customer."""
        return dict(_call(crm, "DELETE", f"/customers/{id}"))

    @server.tool()
    def get_deal(id: str) -> dict[str, Any]:
        """One deal by id (deal_1, ...)."""
        return dict(_call(crm, "GET", f"/deals/{id}"))

    @server.tool()
    def create_deal(customer_id: str, title: str, amount: int) -> dict[str, Any]:
        """A new deal for a customer."""
        return dict(_call(crm, "POST", "/deals",
                          {"customer_id": customer_id, "title": title, "amount": amount}))

    return server


def create_app(crm: CRM, *, stateless: bool = False, json_response: bool = False) -> Starlette:
    """The tools at ``/mcp`` over streamable HTTP: with sessions (``Mcp-Session-Id``) or
    ``stateless``; answers as SSE streams, or JSON with ``json_response``."""
    return create_server(crm).streamable_http_app(stateless_http=stateless,
                                                  json_response=json_response)


class DemoApp:
    """The demo CRM on one port: REST at ``/customers``, ``/deals``, ``/_demo``; its tools
    over MCP at ``/mcp``. The SDK's session manager starts with the first MCP request,
    since the listeners here run apps without lifespan events."""

    def __init__(self, crm: CRM, *, stateless: bool = False, json_response: bool = False) -> None:
        self.crm = crm
        server = create_server(crm)
        self.mcp = server.streamable_http_app(stateless_http=stateless,
                                              json_response=json_response)
        self._manager = server.session_manager
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/mcp" or path.startswith("/mcp/")):
            await self._started()
            await self.mcp(scope, receive, send)
        else:
            await self.crm(scope, receive, send)

    async def _started(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._ready))
        await self._ready.wait()

    async def _run(self, ready: asyncio.Event) -> None:
        async with self._manager.run():
            ready.set()
            await asyncio.Event().wait()  # until the process stops


def serve(host: str = "127.0.0.1", port: int = 3000, token: str | None = None,
          seed: bool = True, stateless: bool = False, json_response: bool = False) -> None:
    """Run the demo CRM (REST, and its tools over MCP at ``/mcp``) until interrupted."""
    import uvicorn

    from gateway.demo.crm import create_app as create_crm

    app = DemoApp(create_crm(seed=seed, token=token), stateless=stateless,
                  json_response=json_response)
    uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
