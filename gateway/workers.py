"""``gateway serve --workers N``: a pre-fork master and N worker processes.

The master binds every socket before it forks, so port 0 works and one
``ready`` line gives the real ports: for each listener it binds N sockets on
the same port with SO_REUSEPORT and hands worker i the i-th of each, and the
kernel spreads new connections across them (one shared accept queue would
let one busy worker take most of a burst of connections). The master keeps
the sockets, so a worker that dies is replaced on the same sockets and the
port is never free in between.

Each worker is a whole gateway (``server.serve``) with its own store
connections; they share nothing in memory. One kill switch holds across them
because it holds across every process on the store (``services.killswitch``):
any worker may serve an engage, and it is exact for all.

The master does no I/O of its own beyond that: it forwards SIGTERM/SIGINT
(stop) and SIGHUP (reload policies) to the workers, replaces a worker that
dies (and tells the others at once, ``services.siblings``: the agent's resend of
a write the dead one was sending must not be sent again), and exits when they
have all stopped. A worker whose master is gone
stops too (it watches a pipe only the master writes to).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from gateway.policies import load_policies
from gateway.server import bind, bind_listeners, configure_logging, ready_line, run_loop, serve
from gateway.services.inflight_shared import SharedCounts
from gateway.services.siblings import Siblings
from gateway.settings import Settings

log = logging.getLogger("gateway.workers")
START_TIMEOUT = 120.0  # seconds for every worker to report ready
RESTART_LIMIT = 5  # replacements within RESTART_WINDOW before the master gives up
RESTART_WINDOW = 60.0


@dataclass
class _Worker:
    index: int
    sockets: tuple[socket.socket, socket.socket]
    pid: int = 0
    restarts: list[float] = field(default_factory=list)


def bind_all(settings: Settings, count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` (proxy, admin) socket pairs, each listener's on one port."""
    first = bind_listeners(settings, reuse_port=True)
    proxies, admins = [first[0]], [first[1]]
    for _ in range(count - 1):
        proxies.append(bind(settings.proxy.host, proxies[0].getsockname()[1],
                            "proxy listener (--port)", reuse_port=True))
        admins.append(bind(settings.admin.host, admins[0].getsockname()[1],
                           "admin listener (--admin-port)", reuse_port=True))
    return list(zip(proxies, admins))


class Master:
    def __init__(self, settings: Settings, banner: list[str]) -> None:
        self.settings = settings
        self.banner = banner
        self.workers = [_Worker(i, pair) for i, pair in enumerate(
            bind_all(settings, settings.workers))]
        self.in_flight = SharedCounts(len(self.workers))  # max_in_flight, for all of them
        self.siblings = Siblings(len(self.workers))  # which of them died, told to the others
        self.ready_read, self.ready_write = os.pipe()  # workers: "ready URL URL REVISION\n"
        self.life_read, self.life_write = os.pipe()  # EOF in a worker: the master is gone
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        for worker in self.workers:
            self._fork(worker)
        if not self._await_ready():
            self._stop(signal.SIGTERM, None)
            self._reap_all()
            return 1
        return self._supervise()

    def _fork(self, worker: _Worker) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = self._work(worker)
            finally:
                os._exit(code)
        worker.pid = pid

    def _work(self, worker: _Worker) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.ready_read)
        os.close(self.life_write)
        self.in_flight.as_worker(worker.index)
        self.siblings.as_worker(worker.index)
        for other in self.workers:
            if other is not worker:
                for sock in other.sockets:
                    sock.close()

        def announce(proxy: str, admin: str, revision: str) -> None:
            os.write(self.ready_write, f"ready {proxy} {admin} {revision}\n".encode())

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def orphaned() -> None:
                loop.remove_reader(self.life_read)
                log.error("worker %d: the master is gone; stopping", worker.index)
                os.kill(os.getpid(), signal.SIGTERM)

            loop.add_reader(self.life_read, orphaned)
            await serve(self.settings, sockets=worker.sockets, announce=announce,
                        in_flight=self.in_flight, siblings=self.siblings)

        try:
            run_loop(main())
        except Exception:
            log.exception("worker %d failed", worker.index)
            return 1
        return 0

    def _await_ready(self) -> bool:
        """Wait for every worker's ready report; print the one ready line."""
        lines: list[list[str]] = []
        buffer = b""
        deadline = time.monotonic() + START_TIMEOUT
        os.set_blocking(self.ready_read, False)
        while len(lines) < len(self.workers):
            if self._dead_at_start() or time.monotonic() > deadline:
                return False
            readable, _, _ = select.select([self.ready_read], [], [], 0.2)
            if readable:
                buffer += os.read(self.ready_read, 4096)
                *complete, buffer = buffer.split(b"\n")
                lines += [line.decode().split() for line in complete if line]
        _, proxy, admin, revision = lines[0]
        for line in self.banner:
            print(line, flush=True)
        print(ready_line(proxy, admin, revision, len(self.workers)), flush=True)
        return True

    def _dead_at_start(self) -> bool:
        for worker in self.workers:
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
            if pid:
                print(f"gateway: worker {worker.index} exited during start "
                      f"({_describe(status)})", file=sys.stderr, flush=True)
                worker.pid = 0
                return True
        return False

    def _supervise(self) -> int:
        while any(w.pid for w in self.workers):
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            worker.pid = 0
            self.in_flight.forget(worker.index)  # the slots it held, free again
            self.siblings.died(worker.index)  # its writes on their way: resends stopped
            if self.stopping:
                continue
            now = time.monotonic()
            worker.restarts = [t for t in worker.restarts if now - t < RESTART_WINDOW] + [now]
            if len(worker.restarts) > RESTART_LIMIT:
                log.error("worker %d keeps dying (%s); stopping", worker.index, _describe(status))
                self._stop(signal.SIGTERM, None)
                continue
            log.error("worker %d exited (%s); starting another", worker.index, _describe(status))
            self._fork(worker)
        return 0

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _forward(self, signum: int, _frame: object) -> None:
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.pid:
                try:
                    os.kill(worker.pid, signum)
                except ProcessLookupError:
                    pass

    def _reap_all(self) -> None:
        for worker in self.workers:
            if worker.pid:
                os.waitpid(worker.pid, 0)
                worker.pid = 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def run(settings: Settings, banner: list[str] | None = None) -> int:
    """Serve with ``settings.workers`` processes; the exit code."""
    configure_logging(settings)
    load_policies(settings.policies_dir)  # PolicyError (with its messages) before any fork
    return Master(settings, banner or []).run()
