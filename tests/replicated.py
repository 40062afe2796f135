"""A PostgreSQL primary and a synchronous streaming standby, started by a test.

Both run from temporary directories on ports of their own (never the
machine's cluster on 5432): ``initdb``, then ``pg_basebackup -R`` for the
standby, whose ``application_name`` the primary names in
``synchronous_standby_names``, so that a commit returns only once the standby
has it (no committed journal intent is lost at promotion). ``fail_over()``
stops the primary at once (``-m immediate``, as a crash) and promotes the
standby (``pg_ctl promote``).

initdb refuses to run as root: as root, every server command runs as the
``postgres`` user (``runuser``). With the binaries absent the tests that need
them are skipped with the reason, or fail under CI (``tests.external``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.external import missing

STANDBY_NAME = "gateway_standby"
TOOLS = ("initdb", "pg_ctl", "pg_basebackup")


def _bindir() -> Path | None:
    config = shutil.which("pg_config")
    if config is not None:
        found = Path(subprocess.run([config, "--bindir"], capture_output=True, text=True,
                                    check=False).stdout.strip())
        if all((found / tool).exists() for tool in TOOLS):
            return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if all((candidate / tool).exists() for tool in TOOLS):
            return candidate
    which = [shutil.which(tool) for tool in TOOLS]
    return Path(which[0]).parent if all(which) else None  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Pair:
    bindir: Path
    root: Path
    primary_port: int
    standby_port: int
    as_postgres: list[str]

    @property
    def primary(self) -> Path:
        return self.root / "primary"

    @property
    def standby(self) -> Path:
        return self.root / "standby"

    def url(self, database: str = "gateway") -> str:
        """The gateway's multi-host ``database_url``: both servers, either may be primary."""
        return (f"postgresql+asyncpg://postgres@127.0.0.1:{self.primary_port},"
                f"127.0.0.1:{self.standby_port}/{database}")

    def dsn(self, port: int, database: str = "gateway") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_postgres, str(self.bindir / tool), *args],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            logs = "".join(p.read_text(errors="replace")[-3000:]
                           for p in self.root.glob("*.log"))
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}\n{logs}")

    def start(self, data: Path) -> None:
        self.run("pg_ctl", "-D", str(data), "-l", str(self.root / f"{data.name}.log"),
                 "-w", "-t", "60", "start")

    def stop(self, data: Path, mode: str = "fast") -> None:
        if (data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(data), "-m", mode, "-w", "-t", "60", "stop")

    def crash_primary(self) -> None:
        self.stop(self.primary, "immediate")

    def promote(self) -> None:
        self.run("pg_ctl", "-D", str(self.standby), "-w", "-t", "60", "promote")

    def fail_over(self) -> None:
        """The primary dies (as in a crash); the synchronous standby is promoted."""
        self.crash_primary()
        self.promote()


def _configure(data: Path, lines: list[str]) -> None:
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n".join(lines) + "\n")


@contextmanager
def replicated_pair() -> Iterator[Pair]:
    bindir = _bindir()
    if bindir is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found; "
                "install postgresql")
        raise AssertionError("unreachable")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="gateway-replicated-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    pair = Pair(bindir, root, _free_port(), _free_port(), as_postgres)
    try:
        pair.run("initdb", "-D", str(pair.primary), "-A", "trust", "-U", "postgres",
                 "--no-sync", "--no-instructions")
        common = [f"unix_socket_directories = '{root}'", "listen_addresses = '127.0.0.1'",
                  "fsync = off", "full_page_writes = off", "shared_buffers = 16MB",
                  "max_connections = 60", "wal_level = replica", "max_wal_senders = 4",
                  "hot_standby = on"]
        _configure(pair.primary, [*common, f"port = {pair.primary_port}",
                                  f"synchronous_standby_names = '{STANDBY_NAME}'",
                                  "synchronous_commit = on"])
        pair.start(pair.primary)
        pair.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(pair.primary_port),
                 "-U", "postgres", "-D", str(pair.standby), "-R", "-X", "stream",
                 "--no-sync")
        _configure(pair.standby, [  # promoted, it has no standby of its own to wait for
            f"port = {pair.standby_port}", "synchronous_standby_names = ''",
            f"primary_conninfo = 'host=127.0.0.1 port={pair.primary_port} user=postgres "
            f"application_name={STANDBY_NAME}'"])
        pair.start(pair.standby)
        yield pair
    finally:
        for data in (pair.standby, pair.primary):
            try:
                pair.stop(data, "immediate")
            except AssertionError:
                pass
        shutil.rmtree(root, ignore_errors=True)
