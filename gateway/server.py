"""Running both listeners in one process: the agent proxy and the admin API.

Sockets are bound here before uvicorn starts (and before the store is
opened, so a port clash fails fast), so port 0 works and the real ports are
printed on one ``ready`` line that scripts and tests can read. SIGHUP
reloads the policy set; SIGINT/SIGTERM stop both listeners. With
``--workers N`` the master in ``gateway.workers`` binds the sockets and runs
``serve`` in each worker on its own pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

from gateway.app import Gateway
from gateway.errors import StartupError
from gateway.observe.access import ACCESS_LOG
from gateway.proxy.connection import protocol_with
from gateway.services.inflight_shared import SharedCounts
from gateway.services.siblings import Siblings
from gateway.settings import Settings

log = logging.getLogger("gateway")


def bind(host: str, port: int, role: str = "listener", reuse_port: bool = False) -> socket.socket:
    """A listening socket; StartupError naming ``role``, host and port when it cannot be had.

    ``reuse_port``: one of several on the same port, the kernel spreading new
    connections across them (SO_REUSEPORT).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = (exc.strerror or str(exc)).lower()
        hint = " (another process has it: stop it, or choose another port)" \
            if exc.errno == errno.EADDRINUSE else ""
        raise StartupError(f"cannot listen on {address} for the {role}: {reason}{hint}") \
            from None
    sock.setblocking(False)
    return sock


def bind_listeners(settings: Settings, reuse_port: bool = False) -> tuple[socket.socket, socket.socket]:
    """The proxy and admin sockets, or StartupError (and neither stays open)."""
    proxy_sock = bind(settings.proxy.host, settings.proxy.port, "proxy listener (--port)",
                      reuse_port)
    try:
        admin_sock = bind(settings.admin.host, settings.admin.port,
                          "admin listener (--admin-port)", reuse_port)
    except StartupError:
        proxy_sock.close()
        raise
    return proxy_sock, admin_sock


def server_for(app: Any, settings: Settings) -> uvicorn.Server:
    # proxy_headers off: X-Forwarded-For is not trusted from agents, and the
    # middleware it would add is one more layer on every call.
    # The protocol: uvicorn's httptools one, plus absolute-form marking and client
    # timeouts (gateway.proxy.connection).
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                            loop="none", http=protocol_with(settings.client_timeout),
                            server_header=False,
                            date_header=False, timeout_graceful_shutdown=5,
                            proxy_headers=False)
    return uvicorn.Server(config)


Announce = Callable[[str, str, str], None]  # proxy URL, admin URL, policy revision


async def serve(settings: Settings, banner: list[str] | None = None,
                beside: tuple[Any, socket.socket] | None = None,
                sockets: tuple[socket.socket, socket.socket] | None = None,
                announce: Announce | None = None, in_flight: SharedCounts | None = None,
                siblings: Siblings | None = None) -> None:
    """Run until SIGINT/SIGTERM; ``beside`` is one more (app, socket), e.g. the demo API.

    ``sockets`` (proxy, admin) are already bound (a worker's); ``announce``
    replaces printing the ready line (a worker tells its master instead);
    ``in_flight``: ``max_in_flight``'s counts, shared with the master's other workers;
    ``siblings``: which of them died (``services.siblings``).
    """
    proxy_sock, admin_sock = sockets if sockets is not None else bind_listeners(settings)
    gateway = Gateway(settings, in_flight=in_flight, siblings=siblings)
    try:
        await gateway.start()
    except BaseException:
        proxy_sock.close()
        admin_sock.close()
        with contextlib.suppress(Exception):  # the start's own error is the one to show
            await gateway.stop()
        raise
    # Everything loaded so far lives for the whole run: keep the collector off it,
    # and collect the young generation less often (fewer pauses on the hot path).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    servers = [server_for(gateway.proxy_app(), settings), server_for(gateway.admin_app(), settings)]
    socks = [proxy_sock, admin_sock]
    if beside is not None:
        servers.append(server_for(beside[0], settings))
        socks.append(beside[1])
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    def reload() -> None:
        loop.create_task(gateway.reload_policies("signal:SIGHUP"))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    proxy_url = _url(proxy_sock)
    admin_url = _url(admin_sock)
    tasks = [asyncio.create_task(server.serve(sockets=[sock]))
             for server, sock in zip(servers, socks)]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    if announce is not None:
        announce(proxy_url, admin_url, gateway.policies.revision)
    else:
        for line in banner or []:
            print(line, flush=True)
        print(ready_line(proxy_url, admin_url, gateway.policies.revision), flush=True)
    try:
        await asyncio.gather(*tasks)
    finally:
        await gateway.stop()


def ready_line(proxy_url: str, admin_url: str, revision: str, workers: int = 1) -> str:
    """What scripts and tests wait for: ``gateway ready proxy=URL admin=URL ...``."""
    line = f"gateway ready proxy={proxy_url} admin={admin_url} policy_revision={revision}"
    return line + (f" workers={workers}" if workers > 1 else "")


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def configure_logging(settings: Settings) -> None:
    """Logs on stderr; the access log (when on) as bare JSON lines, whatever ``log_level``.

    ``log_level`` is the gateway's own loggers' (``gateway.*``); the libraries under it
    say only their warnings and errors. At INFO and DEBUG they write what they carry:
    httpx every URL it posts to (a webhook's or a witness's token in it), the CEL
    evaluator and the MCP client the values of the requests they handle, secret-named
    fields included, and the database drivers their statements' parameters.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    logging.getLogger("gateway").setLevel(settings.log_level.upper())
    access = logging.getLogger(ACCESS_LOG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


def run(settings: Settings, banner: list[str] | None = None,
        beside: tuple[Any, socket.socket] | None = None) -> None:
    configure_logging(settings)
    run_loop(serve(settings, banner, beside))
