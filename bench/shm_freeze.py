"""How often freezing SQLite's ``-shm`` file (``chattr +i``) kills the gateway.

The gateway looks at the file's flags before each statement and commit that
would touch its mapping, and refuses (503) instead of dying of SIGBUS. What is
left is the few microseconds between that check and SQLite's write, which no
check can close. This loop measures it: each cycle sends a PATCH, freezes the
file (``--settle``: only once the write's outcome and audit record are stored),
asks for health, and thaws the file; it stops at the first death and prints
the cycle count. Needs root (``chattr``) and a file system with inode flags.

    python bench/shm_freeze.py --cycles 400 [--settle]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.procs import GATEWAY, READY, start_crm, write_settings  # noqa: E402
from tests.harness import AGENT_KEY, CRM_RULES, TOKENS, policy_text  # noqa: E402

VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}


async def settle(client: httpx.AsyncClient, admin: str) -> None:
    """Until every journaled write has its outcome and an audit record."""
    for _ in range(1000):
        journal = (await client.get(f"{admin}/v1/journal?limit=1000", headers=VIEWER)).json()
        audit = (await client.get(f"{admin}/v1/audit?limit=1000", headers=VIEWER)).json()
        calls = sum(a["action"].startswith("call.") for a in audit["items"])
        if all(e["state"] == "completed" for e in journal["items"]) \
                and calls >= len(journal["items"]):
            return
        await asyncio.sleep(0.01)
    raise SystemExit("the gateway never settled")


async def cycles(count: int, settled: bool, directory: Path) -> tuple[int, int | None]:
    crm = start_crm()
    (directory / "policies").mkdir()
    (directory / "db").mkdir()
    (directory / "policies" / "crm.yaml").write_text(policy_text(crm.urls[0], CRM_RULES))
    config = write_settings(directory, f"sqlite+aiosqlite:///{directory}/db/gw.db")
    log = directory / "gateway.log"
    with log.open("w") as out:
        gateway = subprocess.Popen([*GATEWAY, "serve", "--config", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    shm = directory / "db" / "gw.db-shm"
    try:
        while not (ready := READY.search(log.read_text())):
            if gateway.poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.05)
        proxy, admin = ready.group(1), ready.group(2)
        async with httpx.AsyncClient(headers={"X-Gateway-Key": AGENT_KEY}) as client:
            for cycle in range(1, count + 1):
                await client.patch(f"{proxy}/crm/customers/cus_1", json={"plan": f"p{cycle}"})
                if settled:
                    await settle(client, admin)
                await asyncio.sleep(random.random() * 0.01)
                subprocess.run(["chattr", "+i", str(shm)], check=True)
                try:
                    await client.get(f"{admin}/v1/health")
                    await asyncio.sleep(random.random() * 0.02)
                except httpx.HTTPError:
                    pass  # the process died: seen below
                finally:
                    subprocess.run(["chattr", "-i", str(shm)], check=True)
                try:
                    return cycle, gateway.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass  # alive
                if cycle % 50 == 0:
                    print(f"  {cycle} cycles", file=sys.stderr)
        return count, None
    finally:
        subprocess.run(["chattr", "-i", str(shm)], check=False)
        if gateway.poll() is None:
            gateway.terminate()
            gateway.wait(15)
        crm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=400)
    parser.add_argument("--settle", action="store_true",
                        help="freeze only once the write's outcome and audit record are stored")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        ran, died = asyncio.run(cycles(args.cycles, args.settle, Path(directory)))
        if died is not None:
            tail = (Path(directory) / "gateway.log").read_text().splitlines()[-30:]
            print("\n".join(tail), file=sys.stderr)
    print(f"cycles {ran} settle {args.settle} died {'no' if died is None else f'rc {died}'}")


if __name__ == "__main__":
    main()
