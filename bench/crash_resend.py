"""A worker killed while its write is on its way, and the agent's SDK retrying it.

    .venv/bin/python bench/crash_resend.py [--rounds 3] [--replicas] [--postgres SERVER_URL]

Starts ``gateway serve --workers 2`` (SQLite, or a fresh database on ``--postgres``) in
front of a fault upstream that holds every POST until released, sends one create with
openai-python as it comes (two retries on a connection error), and once the upstream
holds it kills the worker that sent it (SIGKILL: the agent's connection is reset). The
upstream then answers; the SDK's retry reaches the other worker (or its replacement).
Prints how many POSTs the upstream received per round, and what the SDK got: the target
is 1 POST, and ``409 already_sent`` for the retry (the first try may have landed). Until
2026-12-08 the live worker could not tell the retry from a new write and sent it (2 POSTs
per create); now the master tells the live workers which one died, and they mark its
writes on their way before their next write (``gateway.services.siblings``). The test
of it is ``tests/faults/test_workers_resend.py``. With ``--replicas``: two ``gateway
serve`` processes on the store behind a round-robin TCP balancer (a Service in front of
replicas), the first killed; the live one sees the death within ``DEATH_POLL`` (0.2 s)
and the SDK's retry comes about half a second after the reset. Loopback only; about 10 s
a round.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import openai  # noqa: E402

from tests.faults.procs_support import Gateway, configure, holder  # noqa: E402
from tests.faults.procs_upstream import FaultUpstream  # noqa: E402
from tests.harness import AGENT_KEY  # noqa: E402

CREATE = {"name": "refund-7", "amount": 70}


class RoundRobin:
    """A TCP balancer on loopback, as a Service in front of replicas: each new connection
    goes to the next backend in turn (the SDK's retry, on a new connection, reaches the
    replica after the one that died)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = [(u.split("//")[1].split(":")[0], int(u.rsplit(":", 1)[1]))
                         for u in backends]
        self.turn = itertools.count()
        balancer = self

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                target = balancer.backends[next(balancer.turn) % len(balancer.backends)]
                try:
                    upstream = socket.create_connection(target)
                except OSError:
                    return  # the replica is gone: the agent sees its connection closed
                ends = (self.request, upstream)
                back = threading.Thread(target=_copy, args=(upstream, self.request),
                                        daemon=True)
                back.start()
                _copy(self.request, upstream)
                back.join()
                for end in ends:
                    end.close()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Pipe)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for end in (source, sink):  # a reset on one side is passed on as a close
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def one_round(directory: Path, store_url: str, replicas: bool) -> tuple[int, str]:
    with FaultUpstream() as upstream:
        gate = upstream.gate("POST", "/items")
        config = configure(directory, store_url, upstream.url)
        gateways = [Gateway(config), Gateway(config)] if replicas else [
            Gateway(config, "--workers", "2")]
        balancer = RoundRobin([g.proxy for g in gateways]) if replicas else None
        try:
            base = balancer.url if balancer is not None else gateways[0].proxy
            client = openai.OpenAI(api_key=AGENT_KEY, base_url=f"{base}/up", timeout=30)
            outcome: list[str] = []

            def create() -> None:
                try:
                    answer = client.post("/items", body=CREATE, cast_to=httpx.Response)
                    outcome.append(f"{answer.status_code}")
                except openai.APIStatusError as exc:
                    outcome.append(f"{exc.status_code} {exc.response.json()['error']['code']}")
                except openai.APIError as exc:
                    outcome.append(f"{type(exc).__name__}")

            agent = threading.Thread(target=create)
            agent.start()
            upstream.wait_for("POST", "/items")
            if replicas:
                gateways[0].kill()  # the first connection went to the first replica
            else:
                os.kill(holder(int(upstream.url.rsplit(":", 1)[1])), signal.SIGKILL)
                gateways[0].wait_for(r"worker \d exited \(signal SIGKILL\)")  # reaped
            gate.released.set()
            agent.join(60)
            return len(upstream.received("POST", "/items")), ",".join(outcome)
        finally:
            if balancer is not None:
                balancer.close()
            for gateway in gateways:
                gateway.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", action="store_true",
                    help="two gateway serve processes behind a round-robin balancer, "
                         "not one with --workers 2; the first is killed")
    ap.add_argument("--postgres", metavar="SERVER_URL",
                    help="a fresh database on this server per round (dropped after)")
    args = ap.parse_args()
    for n in range(args.rounds):
        directory = Path(tempfile.mkdtemp(prefix="crash-resend-"))
        if args.postgres is None:
            (directory / "db").mkdir()
            store_url, drop = f"sqlite+aiosqlite:///{directory / 'db' / 'gateway.db'}", None
        else:
            name = f"gw_crash_{uuid.uuid4().hex[:8]}"
            _admin(args.postgres, f'CREATE DATABASE "{name}"')
            base = args.postgres.rsplit("/", 1)[0].replace("postgresql://",
                                                           "postgresql+asyncpg://")
            store_url, drop = f"{base}/{name}", name
        try:
            received, outcome = one_round(directory, store_url, args.replicas)
        finally:
            if drop is not None:
                _admin(args.postgres, f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')
        print(f"round {n + 1}: the upstream received {received} POST(s) for one create "
              f"(target 1); the SDK got {outcome or 'nothing'}", flush=True)


def _admin(server: str, statement: str) -> None:
    import asyncio

    async def run() -> None:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
