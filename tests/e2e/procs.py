"""Real processes for end-to-end tests: the demo CRM and ``gateway serve`` on port 0."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.harness import AGENT_KEY, OTHER_KEY, TOKENS, sha

GATEWAY = [sys.executable, "-m", "gateway.cli"]
READY = re.compile(r"gateway ready proxy=(\S+) admin=(\S+)")
UVICORN = re.compile(r"Uvicorn running on (http://\S+)")


def patience(seconds: float) -> float:
    """``seconds`` on an idle machine, stretched by the run-queue per core (at most 4x):
    a process that starts in 2 s alone can take 40 s on a 2-core machine running
    four test workers and their gateways. A process that dies still ends the wait
    at once, so the stretch only costs time when something truly hangs."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return seconds * min(4.0, max(1.0, load))


def wait_for_line(proc: subprocess.Popen, pattern: re.Pattern, stream: str,
                  timeout: float | None = None) -> tuple[re.Match, list[str]]:
    """Read ``stream`` of ``proc`` until a line matches; fail with what was read.

    A thread drains the pipe into a queue (a buffered pipe and select() do not
    mix); it keeps draining afterwards so the child never blocks on a full pipe.
    """
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        with getattr(proc, stream) as pipe:
            for line in pipe:
                lines.put(line)
        lines.put(None)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    _DRAINS[proc.pid] = thread
    seen: list[str] = []
    deadline = time.monotonic() + (patience(30.0) if timeout is None else timeout)
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match, seen
    proc.kill()
    proc.wait()
    thread.join(timeout=10)
    raise AssertionError(f"no line matching {pattern.pattern!r}; output:\n{''.join(seen)}")


_DRAINS: dict[int, threading.Thread] = {}


@dataclass
class Proc:
    proc: subprocess.Popen
    urls: tuple[str, ...]
    output: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        drain = _DRAINS.pop(self.proc.pid, None)
        if drain is not None:
            drain.join(timeout=10)
        return self.proc.returncode


def start_crm(token: str | None = None) -> Proc:
    args = [sys.executable, "-m", "gateway.demo", "--port", "0"]
    if token:
        args += ["--token", token]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    match, _ = wait_for_line(proc, UVICORN, "stderr")
    return Proc(proc, (match.group(1),))


def write_settings(directory: Path, database_url: str, **extra: object) -> Path:
    settings = {
        "database_url": database_url,
        "policies_dir": str(directory / "policies"),
        "proxy": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "agents": [{"name": "bot", "key_sha256": sha(AGENT_KEY)},
                   {"name": "other", "key_sha256": sha(OTHER_KEY)}],
        "operators": [{"name": role, "role": role, "token_sha256": sha(token)}
                      for role, token in TOKENS.items()],
        **extra,
    }
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def start_gateway(config: Path, *flags: str, env: dict[str, str] | None = None) -> Proc:
    return start_gateways(config, 1, *flags, env=env)[0]


def start_gateways(config: Path, count: int, *flags: str,
                   env: dict[str, str] | None = None) -> list[Proc]:
    """``count`` gateway processes on one settings file, started side by side."""
    procs = [subprocess.Popen([*GATEWAY, "serve", "--config", str(config), *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(env or {})}) for _ in range(count)]
    started: list[Proc] = []
    try:
        for proc in procs:
            match, seen = wait_for_line(proc, READY, "stdout")
            started.append(Proc(proc, (match.group(1), match.group(2)), seen))
    except BaseException:
        for proc in procs[len(started):]:
            proc.kill()
            proc.wait()
        for gateway in started:
            gateway.stop()
        raise
    return started


def run_gateway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=timeout)
