"""The engage's store transaction alone: ``SqlStore.engage`` then ``release``, N times,
on a fresh PostgreSQL database on ``GATEWAY_TEST_POSTGRES``'s server (as the
tests; default postgresql://postgres@127.0.0.1:5432/postgres), no other load
from the gateway (no network but the database's). Prints p50/p90 of the engage
in ms. Run it from two trees to compare (the store that is imported is the one
on PYTHONPATH):

    .venv/bin/python bench/engage_cost.py [--rounds 200]
    PYTHONPATH=/tmp/before .venv/bin/python bench/engage_cost.py
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.engine import make_url

from gateway.core.model import Freeze, FreezeScope
from gateway.store.sql import SqlStore

SERVER = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


async def main(rounds: int) -> None:
    name = f"gw_engage_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f'CREATE DATABASE "{name}"')
    store = SqlStore(make_url(SERVER).set(drivername="postgresql+asyncpg", database=name)
                     .render_as_string(hide_password=False))
    try:
        await store.start()
        times = []
        for n in range(rounds):
            at = datetime.now(UTC)
            freeze = Freeze(FreezeScope.GLOBAL, None, f"bench {n}", "bench", at,
                            id=uuid.uuid4().hex)
            began = time.perf_counter()
            await store.engage(freeze)
            times.append((time.perf_counter() - began) * 1000)
            await store.release(FreezeScope.GLOBAL, None, "bench", "over", at)
        times.sort()
        print(f"engage (store) ms over {rounds}: p50 {statistics.median(times):.3f} "
              f"p90 {times[int(len(times) * 0.9)]:.3f} max {times[-1]:.3f}")
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args().rounds))
