"""On SQLite an intent is on disk before its write is sent (CONTRACT, "The life of a
write under faults").

A killed process cannot show it (its page cache survives it); the system calls
can. ``strace`` follows a real ``gateway serve`` while it relays a PATCH to the
demo CRM: between the capture GET and the PATCH leaving for the upstream there
must be an ``fdatasync``/``fsync`` of the database's files that has returned.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, CRM_RULES, TOKENS, policy_text

AGENT = {"X-Gateway-Key": AGENT_KEY}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
ENV = {"E2E_CRM_TOKEN": "e2e-upstream-token"}
SYNC = re.compile(r"^(\d+)\s+f(?:data)?sync\((\d+)<([^>]*)>")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. f(?:data)?sync resumed>.*= 0")
SENT = re.compile(r'^\d+\s+(?:write|sendto|sendmsg|writev)\(\d+<TCP:\[[^\]]*\]>,.*?"(GET|PATCH) '
                  r'/customers/cus_1 HTTP')


@pytest.fixture
def crm() -> Iterator[Proc]:
    proc = start_crm(token="e2e-upstream-token")
    yield proc
    proc.stop()


def config_for(tmp_path: Path, crm: Proc, **extra: object) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(
        crm.urls[0], CRM_RULES,
        extra='credentials: {header: Authorization, value: "Bearer ${E2E_CRM_TOKEN}"}\n'))
    return write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gateway.db", **extra)


def traced_patch(gateway: Proc, log: Path) -> list[str]:
    """The system calls of ``gateway`` (every thread) while it relays one PATCH."""
    proxy = gateway.urls[0]
    warm = httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "warm"}, headers=AGENT)
    assert warm.status_code == 200  # connections open, WAL in place: the traced call is plain
    pid = gateway.proc.pid
    tracer = subprocess.Popen(
        ["strace", "-f", "-yy", "-s", "64", "-o", str(log), "-p", str(pid),
         "-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # "Process N attached with T threads": every thread is traced from here on
        assert tracer.stderr is not None
        line = tracer.stderr.readline()
        assert "attached" in line, f"strace did not attach: {line!r}"
        write = httpx.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "gold"},
                            headers=AGENT, timeout=30)
        assert write.status_code == 200
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches; the gateway runs on
        tracer.wait(timeout=20)
        if tracer.stderr is not None:
            tracer.stderr.close()
    return log.read_text().splitlines()


def synced_between_capture_and_send(lines: list[str], database: str) -> bool:
    capture = next(i for i, line in enumerate(lines) if (m := SENT.search(line))
                   and m.group(1) == "GET")
    send = next(i for i, line in enumerate(lines) if (m := SENT.search(line))
                and m.group(1) == "PATCH")
    pending: dict[str, str] = {}  # a thread's sync that has not returned yet
    for line in lines[capture + 1:send]:
        if (started := SYNC.search(line)) is not None:
            if "unfinished" in line:
                pending[started.group(1)] = started.group(3)
            elif line.rstrip().endswith("= 0") and started.group(3).startswith(database):
                return True
        elif (resumed := RESUMED.search(line)) is not None:
            if pending.pop(resumed.group(1), "").startswith(database):
                return True
    return False


def test_the_intent_is_on_disk_before_the_write_is_sent(tmp_path: Path, crm: Proc) -> None:
    gateway = start_gateway(config_for(tmp_path, crm), env=ENV)
    try:
        lines = traced_patch(gateway, tmp_path / "strace.log")
        assert any(SENT.search(line) for line in lines), "\n".join(lines[-40:])
        assert synced_between_capture_and_send(lines, str(tmp_path / "gateway.db")), \
            "no fsync of the journal between the capture GET and the PATCH:\n" + "\n".join(
                line for line in lines if "sync" in line or SENT.search(line))
        entries = httpx.get(f"{gateway.urls[1]}/v1/journal", headers=ADMIN).json()["items"]
        assert sorted(e["prior"]["plan"] for e in entries) == ["pro", "warm"]
    finally:
        assert gateway.stop() == 0


def test_journal_fsync_off_sends_without_a_flush(tmp_path: Path, crm: Proc) -> None:
    """The setting that prices durability (bench/) really turns the flush off."""
    gateway = start_gateway(config_for(tmp_path, crm, journal_fsync=False), env=ENV)
    try:
        lines = traced_patch(gateway, tmp_path / "strace.log")
        assert any(SENT.search(line) for line in lines), "\n".join(lines[-40:])
        assert not synced_between_capture_and_send(lines, str(tmp_path / "gateway.db"))
    finally:
        assert gateway.stop() == 0
