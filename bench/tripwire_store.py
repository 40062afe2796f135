"""What issue 16's shared tripwire windows and leases cost per call, on both backends.

    .venv/bin/python bench/tripwire_store.py [--postgres URL] [--calls 300]

``--postgres`` defaults to ``GATEWAY_TEST_POSTGRES`` (as the tests), else
postgresql://postgres@127.0.0.1:5432/postgres.

``count_tripwire`` runs once per write that a count or sum tripwire watches (no
tripwire of those kinds: never); ``take_lease`` once per heartbeat (every
``executor_lease / 3`` seconds) and per plan renewal. PostgreSQL gets a fresh
database, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from gateway.core.model import utcnow
from gateway.store.sql import SqlStore


async def measure(url: str, calls: int) -> tuple[float, float]:
    store = SqlStore(url)
    await store.start()
    try:
        for _ in range(20):  # warm up: connections, prepared statements
            await store.count_tripwire("w", 1, 60, utcnow())
        began = time.perf_counter()
        for _ in range(calls):
            await store.count_tripwire("w", 1, 60, utcnow())
        counted = (time.perf_counter() - began) / calls * 1000
        began = time.perf_counter()
        for _ in range(calls):
            await store.take_lease("process:bench", "bench", utcnow(), 15)
        leased = (time.perf_counter() - began) / calls * 1000
    finally:
        await store.close()
    return counted, leased


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get(
        "GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="gw-bench-")
    rows = [("sqlite", await measure(f"sqlite+aiosqlite:///{directory}/gw.db", args.calls))]
    name = f"gw_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(args.postgres)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(args.postgres).set(drivername="postgresql+asyncpg", database=name)
        rows.append(("postgresql", await measure(url.render_as_string(hide_password=False),
                                                 args.calls)))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"{'store':<12}{'count_tripwire ms':>20}{'take_lease ms':>16}")
    for backend, (counted, leased) in rows:
        print(f"{backend:<12}{counted:>20.2f}{leased:>16.2f}")


if __name__ == "__main__":
    asyncio.run(main())
