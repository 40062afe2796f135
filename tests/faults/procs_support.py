"""Helpers for the process tests: settings, a gateway process whose output is kept,
SIGKILL, the admin API, and a throwaway PostgreSQL cluster to stop and start."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import write_settings
from tests.harness import AGENT_KEY, TOKENS, policy_text

GATEWAY = [sys.executable, "-m", "gateway.cli"]
READY = re.compile(r"gateway ready proxy=(\S+) admin=(\S+)")
AGENT = {"X-Gateway-Key": AGENT_KEY}
RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PATCH, PUT], path: "/items/{id}"}
  action: allow
- id: create
  match: {methods: [POST], path: "/items"}
  action: allow
- id: held
  match: {methods: [PATCH], path: "/held/{id}"}
  action: hold
"""


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def configure(tmp_path: Path, store_url: str, upstream_url: str, rules: str = RULES,
              policy_extra: str = "", **settings: Any) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "up.yaml").write_text(
        policy_text(upstream_url, rules, upstream="up", extra=policy_extra))
    return write_settings(tmp_path, store_url, **settings)


class Gateway:
    """``gateway serve`` (``--workers N`` in ``flags``) with its output kept in ``lines``."""

    def __init__(self, config: Path, *flags: str) -> None:
        self.proc = subprocess.Popen([*GATEWAY, "serve", "--config", str(config), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ})
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        match = self.wait_for(READY, 60)
        self.proxy, self.admin = match.group(1), match.group(2)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as pipe:
            for line in pipe:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "" and
                                 self.proc.poll() is not None):
                    self.stop()
                    raise AssertionError(f"no line matching {regex.pattern!r}; output:\n"
                                         + "".join(self.lines))
                self._changed.wait(min(left, 0.5))

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._changed:
            return sum(1 for line in self.lines if regex.search(line))

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush (a single process: no ``--workers``)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)

    def api(self, method: str, path: str, as_role: str = "admin", **kwargs: Any
            ) -> httpx.Response:
        return httpx.request(method, f"{self.admin}{path}", headers=role(as_role),
                             timeout=kwargs.pop("timeout", 60), **kwargs)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**AGENT, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.proxy}/up{path}", headers=headers,
                             timeout=kwargs.pop("timeout", 60), **kwargs)

    def journal(self, **params: Any) -> list[dict[str, Any]]:
        response = self.api("GET", "/v1/journal", "viewer", params=params)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def audit(self) -> list[dict[str, Any]]:
        response = self.api("GET", "/v1/audit", "viewer", params={"limit": 10000})
        assert response.status_code == 200, response.text
        return response.json()["items"]


def in_thread(target: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``target(*args, **kwargs)`` in a thread; its result (or exception) lands in the
    list."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(target(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def holder(port: int) -> int:
    """The pid of the one process with an open connection to 127.0.0.1:``port`` (the
    worker of ``gateway serve --workers N`` sending a write there)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, check=True).stdout
    pids = {int(p) for p in re.findall(r"pid=(\d+)", out)}
    if len(pids) != 1:
        raise AssertionError(f"expected one process holding the write, found {pids}: {out}")
    return pids.pop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL 15 cluster of our own (never the shared one) to stop and
    start: ``initdb`` in a temporary directory, run as the ``postgres`` user when root."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres([str(self.BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8"])
        self.start()
        self._psql("CREATE DATABASE gw")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/gw"

    def _as_postgres(self, args: list[str]) -> None:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def _psql(self, sql: str) -> None:
        self._as_postgres([str(self.BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                           "-U", "postgres", "-c", sql])

    def start(self) -> None:
        self._as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                           str(self.dir / "log"), "-o",
                           f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                           "-c fsync=off -c max_connections=60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres([str(self.BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode,
                           "stop"])

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except AssertionError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def query(store_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows straight from the store the gateways share (what no API shows: a lease)."""
    if store_url.startswith("sqlite"):
        import sqlite3
        path = store_url.split("///", 1)[1]
        with sqlite3.connect(path) as connection:
            return [tuple(r) for r in connection.execute(sql.replace("$1", "?"), args)]
    import asyncio

    import asyncpg

    async def fetch() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(store_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(r) for r in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    return asyncio.run(fetch())
