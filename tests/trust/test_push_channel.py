"""Issue 17 item 4, as reported, against real gateway processes on both stores.

A PostgreSQL role with only CONNECT ran ``pg_notify('gateway_bus', <an engage
with generation 10**15>)``: every write was 423, release answered 200, and
writes stayed frozen until a restart (the SQLite sockets took the same
datagram). Here the forgery comes first, then a real engage and release
through one process; the bus delivers in order (NOTIFY in commit order, each
socket its datagrams in order), so both processes heard the forgery before
the release, and writes must flow again through both. Whether a forged
message alone freezes anything: tests/store/test_bus_forgery.py.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.procs import Proc, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.harness import AGENT_KEY, TOKENS, policy_text, poll

BOT = {"X-Gateway-Key": AGENT_KEY}
APPROVER = {"Authorization": f"Bearer {TOKENS['approver']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
RULES = """
- id: items
  match: {methods: [PATCH], path: "/items/{id}"}
  action: allow
"""
FORGED = {"type": "engage", "id": "forged", "generation": 10 ** 15, "wait": 0.5,
          "freeze": {"scope": "global", "target": None, "reason": "forged", "by": "mallory",
                     "at": "2026-12-01T00:00:00Z", "id": "forged"}}


@pytest.fixture
def gateways(tmp_path: Path, store_url: str) -> Iterator[list[Proc]]:
    with Recorder.serving() as upstream:
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
        config = write_settings(tmp_path, store_url, engage_wait=1.0, upstream_timeout=30)
        started = start_gateways(config, 2)
        yield started
        for proc in started:
            proc.stop()


async def forge_on_postgres(store_url: str) -> None:
    import asyncpg  # the PostgreSQL rows alone need the driver
    url = make_url(store_url).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    role = f"forger_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT CONNECT ON DATABASE "{url.database}" TO "{role}"')
        forger = await asyncpg.connect(dsn, user=role)
        try:
            await forger.execute("SELECT pg_notify('gateway_bus', $1)", json.dumps(FORGED))
        finally:
            await forger.close()
    finally:
        await admin.execute(f'REVOKE CONNECT ON DATABASE "{url.database}" FROM "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


def forge_on_sqlite(store_url: str) -> int:
    database = Path(make_url(store_url).database or "")
    directory = Path(os.readlink(database.with_name(f".{database.name}.bus")))
    sent = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for path in directory.glob("*.sock"):
            sock.sendto(json.dumps(FORGED).encode(), str(path))
            sent += 1
    return sent


def writes_go(proxy: str) -> bool:
    name = uuid.uuid4().hex[:8]
    return httpx.patch(f"{proxy}/crm/items/{name}", json={"x": 1}, headers=BOT,
                       timeout=30).status_code == 200


async def test_a_forged_engage_does_not_outlive_the_release(
        gateways: list[Proc], store_url: str) -> None:
    (proxy_a, admin_a), (proxy_b, _) = (g.urls for g in gateways)
    assert writes_go(proxy_a) and writes_go(proxy_b)
    if store_url.startswith("postgresql"):
        await forge_on_postgres(store_url)
    else:
        assert forge_on_sqlite(store_url) == 2  # both processes' sockets
    engaged = httpx.post(f"{admin_a}/v1/killswitch/engage", json={"reason": "real"},
                         headers=APPROVER, timeout=30)
    assert engaged.status_code == 200, engaged.text
    assert not writes_go(proxy_a) and not writes_go(proxy_b)
    released = httpx.post(f"{admin_a}/v1/killswitch/release", json={"reason": "ok"},
                          headers=ADMIN, timeout=30)
    assert released.status_code == 200 and released.json()["released"] is not None
    for proxy in (proxy_a, proxy_b):  # within a few heartbeats at most
        poll(lambda p=proxy: writes_go(p), f"{proxy} to take writes after the release "
             "(it stayed frozen)", timeout=15, interval=0.1)
