"""The kill switch's engage after a steady stream of writes, on PostgreSQL.

    .venv/bin/python bench/engage_sustained.py [--warm 45] [--rounds 15] [--gap 1]
                                               [--conns 8] [--tree DIR]

``bench/run.py``'s kill-switch run engages every ~100 ms, so between two
engages only a few writes land and the journal stays small. An operator
engages after minutes of writes. This starts the bench's upstream and two
``gateway serve`` (A and B) on one fresh PostgreSQL database, PATCHes into A
with wrk at ``--conns`` connections for ``--warm`` seconds (by default longer
than the 40 s a write may take, the window the open intents are read over),
then engages on B ``--rounds`` times, each after ``--gap`` seconds of writes
again, and prints the engage's latency as the operator sees it and its phases
from B's "kill switch engaged" log line (gateway/services/killswitch.py), and
how long one read of the open intents took, as the engage makes it, right
after the last round. ``--tree DIR`` runs the gateways from another source tree
(``git archive REV | tar -x -C DIR``) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

HERE = Path(__file__).resolve().parent
PHASES = ("store commit", "announce", "own writes", "answers", "open intents")
_LINE = re.compile(r"engaged \(\w+\): ([\d.]+) ms: store commit ([\d.]+), announce ([\d.]+), "
                   r"own writes ([\d.]+), answers of \d+ processes ([\d.]+), "
                   r"open intents ([\d.]+)")


async def _open_read(url: str, table: str) -> tuple[float, int]:
    """One read of the open intents of the last 40 s, timed (ms), and the journal's rows."""
    import asyncpg
    connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        since = (datetime.now(UTC) - timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        where = "WHERE state = 'intent' AND at >= $1" if table == "journal" else \
            "WHERE at >= $1"
        started = time.perf_counter()
        await connection.fetch(f"SELECT id, agent, upstream, method, path, process FROM "
                               f"{table} {where} ORDER BY at, id", since)
        took = (time.perf_counter() - started) * 1000
        return took, int(await connection.fetchval("SELECT count(*) FROM journal"))
    finally:
        await connection.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", type=float, default=45.0, help="seconds of writes first")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--gap", type=float, default=1.0, help="seconds of writes between engages")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--tree", type=Path, help="run the gateways from this source tree")
    ap.add_argument("--postgres", default=bench.POSTGRES)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-sustained-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    pg = bench.Postgres(args.postgres)
    procs: list[bench.Proc] = []
    loader: subprocess.Popen[str] | None = None
    env = {"OTEL_SDK_DISABLED": "true"}
    if args.tree is not None:
        env["PYTHONPATH"] = str(args.tree.resolve())
    try:
        up = bench.Proc("upstream", [sys.executable, str(HERE / "upstream.py")],
                        r"ready port=(\d+)", logdir)
        procs.append(up)
        upstream_url = f"http://127.0.0.1:{up.match.group(1)}"
        config, policies = bench.write_gateway_config(tmp, upstream_url)
        db = pg.create()
        a, a_proxy, _ = bench.start_gateway("a", config, policies, db, logdir, env=env)
        procs.append(a)
        b, _, b_admin = bench.start_gateway("b", config, policies, db, logdir, env=env)
        procs.append(b)
        loader = subprocess.Popen(
            ["wrk", "-t", "2", "-c", str(args.conns), "-d", "3600s", "--timeout", "5s",
             "-s", str(HERE / "bench.lua"), a_proxy + "/bench" + bench.ITEM_PATH],
            env=dict(os.environ, BENCH_METHOD="PATCH", BENCH_KEY=bench.AGENT_KEY,
                     BENCH_NONCE=uuid.uuid4().hex),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        print(f"writing for {args.warm:.0f} s ...", flush=True)
        time.sleep(args.warm)  # the load itself: nothing to synchronise with
        latencies = []
        for n in range(args.rounds):
            started = time.perf_counter()
            status, body = bench.call("POST", b_admin + "/v1/killswitch/engage",
                                      {"reason": f"sustained {n}"}, bench.ADMIN_TOKEN)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"engage answered {status}: {body!r}\n{b.logs()}")
            bench.call("POST", b_admin + "/v1/killswitch/release", {"reason": "bench"},
                       bench.ADMIN_TOKEN)
            time.sleep(args.gap)
        tables = asyncio.run(pg.fetch(db, "SELECT to_regclass('journal_open')::text"))
        table = "journal_open" if tables[0][0] else "journal"
        read_ms, rows = asyncio.run(_open_read(db, table))
        log = b.stderr_path.read_text(errors="replace").splitlines()
        phases = [[float(x) for x in m.groups()] for m in map(_LINE.search, log) if m]
        print(f"engage after {args.warm:.0f} s of writes at {args.conns} connections "
              f"({rows} journal rows), {args.rounds} rounds {args.gap:.1f} s apart:")
        table_rows = [("engage as the operator sees it", latencies)] + [
            (name, [p[i] for p in phases]) for i, name in enumerate(("in the gateway", *PHASES))]
        for name, values in table_rows:
            if values:
                summary = bench._summary(values)  # p50, p99, max
                print(f"  {name:31s} p50 {summary['p50']:7.2f}  p99 {summary['p99']:7.2f}  "
                      f"max {summary['max']:7.2f} ms")
        print(f"  one read of the open intents ({table}): {read_ms:.2f} ms")
        return 0
    finally:
        if loader is not None:
            loader.terminate()
            loader.wait()
        for p in reversed(procs):
            p.stop()
        pg.drop_all()


if __name__ == "__main__":
    sys.exit(main())
