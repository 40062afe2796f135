"""Running both listeners in one process: the agent proxy and the admin API.

Sockets are bound here before uvicorn starts, so port 0 works and the real
ports are printed on one ``ready`` line that scripts and tests can read.
SIGHUP reloads the policy set; SIGINT/SIGTERM stop both listeners.
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
from typing import Any

import uvicorn

from gateway.app import Gateway
from gateway.errors import StartupError
from gateway.observe.access import ACCESS_LOG
from gateway.settings import Settings

log = logging.getLogger("gateway")


def bind(host: str, port: int, role: str = "listener") -> socket.socket:
    """A listening socket; StartupError naming ``role``, host and port when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def _server(app: Any, settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                            loop="none", http="httptools", server_header=False,
                            date_header=False, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


async def serve(settings: Settings, banner: list[str] | None = None,
                beside: tuple[Any, socket.socket] | None = None) -> None:
    """Run until SIGINT/SIGTERM; ``beside`` is one more (app, socket), e.g. the demo API."""
    proxy_sock = bind(settings.proxy.host, settings.proxy.port, "proxy listener (--port)")
    try:
        admin_sock = bind(settings.admin.host, settings.admin.port,
                          "admin listener (--admin-port)")
    except StartupError:
        proxy_sock.close()
        raise
    gateway = Gateway(settings)
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
    servers = [_server(gateway.proxy_app(), settings), _server(gateway.admin_app(), settings)]
    socks = [proxy_sock, admin_sock]
    if beside is not None:
        servers.append(_server(beside[0], settings))
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
    for line in banner or []:
        print(line, flush=True)
    print(f"gateway ready proxy={proxy_url} admin={admin_url} "
          f"policy_revision={gateway.policies.revision}", flush=True)
    try:
        await asyncio.gather(*tasks)
    finally:
        await gateway.stop()


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def configure_logging(settings: Settings) -> None:
    """Logs on stderr; the access log (when on) as bare JSON lines, whatever ``log_level``."""
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    access = logging.getLogger(ACCESS_LOG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)


def run(settings: Settings, banner: list[str] | None = None,
        beside: tuple[Any, socket.socket] | None = None) -> None:
    configure_logging(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(serve(settings, banner, beside))
    else:
        uvloop.run(serve(settings, banner, beside))
