"""A SQLite store whose files cannot be written (issue 17 item 10), on a real process.

SQLite maps the ``-shm`` file into memory: once it cannot be written (``chattr +i``:
not even root may), touching the mapping kills the process with SIGBUS. The
gateway checks before each transaction and fails closed: health says the store
is not ok (503), a write is 503 ``journal_unavailable`` and never reaches the
upstream, and the process stays up; once the files are writable again, so is the
store.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_crm, start_gateway, write_settings
from tests.harness import AGENT_KEY, CRM_RULES, TOKENS, policy_text, until


@pytest.fixture
def crm() -> Iterator[Proc]:
    proc = start_crm()
    yield proc
    proc.stop()


def immutable(paths: list[Path], on: bool) -> None:
    for path in paths:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


ROWS = [
    # (row id, the files made immutable, relative to the database's directory)
    ("database-wal-shm-and-directory", ["gw.db", "gw.db-wal", "gw.db-shm", "."]),
    ("shm-only", ["gw.db-shm"]),
]


async def settled(client: httpx.AsyncClient, admin: str) -> None:
    """Until the gateway has written what follows the write's reply: its outcome in
    the journal and its decision in the audit chain. A file turned unwritable at any
    moment is refused by the check before each statement, except in the microseconds
    between that check and SQLite touching the mapping (the kernel gives no way to
    close them, README "Store health"). Right after the reply the gateway spends much
    of its time in exactly such moments, writing the outcome and the audit record:
    freezing the files then measured that window (one run in a few hundred), not
    the check."""
    viewer = {"Authorization": f"Bearer {TOKENS['viewer']}"}

    async def written() -> bool:
        journal = (await client.get(f"{admin}/v1/journal", headers=viewer)).json()["items"]
        audit = (await client.get(f"{admin}/v1/audit", headers=viewer)).json()["items"]
        return [e["state"] for e in journal] == ["completed"] \
            and any(a["action"].startswith("call.") for a in audit)
    await until(written, "the first write's outcome and audit record to be stored")


@pytest.mark.parametrize("names", [r[1] for r in ROWS], ids=[r[0] for r in ROWS])
async def test_unwritable_sqlite_files_fail_closed_without_killing_the_process(
        tmp_path: Path, crm: Proc, names: list[str]) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], CRM_RULES))
    (tmp_path / "db").mkdir()
    config = write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/db/gw.db")
    gateway = start_gateway(config)
    proxy, admin = gateway.urls
    frozen = [tmp_path / "db" / name for name in names]
    try:
        async with httpx.AsyncClient(headers={"X-Gateway-Key": AGENT_KEY}) as client:
            first = await client.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "pro"})
            assert first.status_code == 200, first.text
            assert all(p.exists() for p in frozen)
            await settled(client, admin)
            immutable(frozen, True)
            try:
                health = await client.get(f"{admin}/v1/health")
                write = await client.patch(f"{proxy}/crm/customers/cus_1",
                                           json={"plan": "free"})
                assert gateway.proc.poll() is None, gateway.output[-20:]
            finally:
                immutable(frozen, False)
            assert health.status_code == 503, health.text
            assert health.json()["status"] != "ok"
            assert write.status_code == 503, write.text
            assert write.json()["error"]["code"] == "journal_unavailable"
            customer = await client.get(f"{proxy}/crm/customers/cus_1")
            assert customer.json()["plan"] == "pro"  # the refused write never landed

            async def healthy() -> bool:
                return (await client.get(f"{admin}/v1/health")).status_code == 200
            await until(healthy, "the store is healthy once its files are writable again")
    finally:
        immutable(frozen, False)
        gateway.stop()


HOLD_LOCK = """
import array, fcntl, os, sqlite3, struct, sys
holder = sqlite3.connect(sys.argv[1], isolation_level=None)
holder.execute("UPDATE alembic_version SET version_num = version_num")  # the WAL grows
holder.execute("BEGIN IMMEDIATE")
print("held", flush=True)
assert sys.stdin.readline() == "freeze\\n"
# As right after another writer's commit: the WAL holds frames no reader has marked yet
# (aReadMark[1..4] of the -shm's checkpoint info, below its end), so whoever takes the
# lock next records a read mark, a write into the -shm's first page; that page written
# back to disk (as the kernel does every few seconds), a write to it faults; then the
# -shm made immutable (chattr +i) at once, before a waiter's try marks the WAL again.
shm = os.open(sys.argv[1] + "-shm", os.O_RDWR)
os.pwrite(shm, struct.pack("<4I", 0, 0, 0, 0), 104)
os.fsync(shm)
flags = array.array("i", [0])
fcntl.ioctl(shm, 0x80086601, flags, True)  # FS_IOC_GETFLAGS
flags[0] |= 0x10  # FS_IMMUTABLE_FL
fcntl.ioctl(shm, 0x40086602, flags)  # FS_IOC_SETFLAGS
print("frozen", flush=True)
sys.stdin.read()
"""


def sleeping_threads(pid: int) -> list[str]:
    """The threads of ``pid`` asleep in a timed sleep (``nanosleep``): none of the
    gateway's own, which wait in epoll or on futexes, except one waiting out another
    connection's lock between tries (SQLite's busy handler, or the gateway's)."""
    tasks = Path(f"/proc/{pid}/task")
    return [t.name for t in tasks.iterdir()
            if (t / "wchan").read_text().strip() == "hrtimer_nanosleep"]


WAITERS = [
    # (row id, the write that waits: the agent's journal write on the hot path, or an
    #  operator's rollback plan through the admin side's engine; the refusal's code)
    ("agent-write", "journal_unavailable"),
    ("operator-rollback-plan", "store_unavailable"),
]


@pytest.mark.parametrize("code", [r[1] for r in WAITERS], ids=[r[0] for r in WAITERS])
async def test_a_write_waiting_for_another_process_lock_is_refused_when_the_shm_freezes(
        tmp_path: Path, crm: Proc, code: str) -> None:
    """A write that finds another process holding the write lock waits for it. The
    ``-shm`` file turns unwritable meanwhile; once the other process lets go, the
    write is refused (503), not retried into the frozen mapping: that retry, inside
    SQLite's busy timeout where no check ran, killed the process (SIGBUS). The
    operator's write (SQLAlchemy's ``BEGIN IMMEDIATE``) died so when its retry had
    to record a read mark (the WAL grew since any reader marked it, as right after
    another writer's commit), which the holder arranges before it lets go."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], CRM_RULES))
    (tmp_path / "db").mkdir()
    database = tmp_path / "db" / "gw.db"
    # the heartbeat renews its lease every executor_lease / 3: none while the lock is held
    config = write_settings(tmp_path, f"sqlite+aiosqlite:///{database}", executor_lease=3600)
    gateway = start_gateway(config)
    proxy, admin = gateway.urls
    shm = [tmp_path / "db" / "gw.db-shm"]
    operator = {"Authorization": f"Bearer {TOKENS['admin']}"}
    holder: subprocess.Popen[str] | None = None
    try:
        async with httpx.AsyncClient(headers={"X-Gateway-Key": AGENT_KEY}) as client:
            first = await client.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "pro"})
            assert first.status_code == 200, first.text
            await settled(client, admin)
            entry = (await client.get(f"{admin}/v1/journal", headers=operator)
                     ).json()["items"][0]["id"]
            assert sleeping_threads(gateway.proc.pid) == []
            holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(database)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            write = asyncio.create_task(
                client.patch(f"{proxy}/crm/customers/cus_1", json={"plan": "free"})
                if code == "journal_unavailable" else
                client.post(f"{admin}/v1/rollback", headers=operator,
                            json={"entries": [entry], "dry_run": True}))
            await until(lambda: write.done() or sleeping_threads(gateway.proc.pid),
                        "the gateway's write to wait for the other process's lock")
            assert not write.done(), write.result().text
            try:
                assert holder.stdin is not None
                holder.stdin.write("freeze\n")  # the -shm, as chattr +i does
                holder.stdin.flush()
                assert holder.stdout.readline() == "frozen\n"
                holder.kill()  # its locks go with it; it never touches the frozen mapping
                holder.communicate()
                try:
                    answer = await write
                except httpx.TransportError as exc:
                    status = gateway.proc.wait(timeout=30)
                    raise AssertionError(f"the gateway dropped the write ({exc!r}) and "
                                         f"exited with {status} (-7: SIGBUS)") from exc
                assert gateway.proc.poll() is None
            finally:
                immutable(shm, False)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == code
            customer = await client.get(f"{proxy}/crm/customers/cus_1")
            assert customer.json()["plan"] == "pro"  # the refused write never landed
            plans = await client.get(f"{admin}/v1/rollback", headers=operator)
            assert plans.json()["items"] == []  # nor did the refused plan

            async def healthy() -> bool:
                return (await client.get(f"{admin}/v1/health")).status_code == 200
            await until(healthy, "the store is healthy once its -shm is writable again")
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
        immutable(shm, False)
        gateway.stop()
