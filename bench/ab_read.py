"""A/B of the read or write path: this tree (or ``--after``) against another revision,
in the same session.

    git archive REV | tar -x -C /tmp/before
    .venv/bin/python bench/ab_read.py --before /tmp/before --rounds 8
    .venv/bin/python bench/ab_read.py --before /tmp/a --after /tmp/b --method PATCH
    .venv/bin/python bench/ab_read.py --before /tmp/before --method PATCH --postgres \
        postgresql://postgres@127.0.0.1:5432/postgres

Starts ``bench/upstream.py`` and two ``gateway serve`` side by side (the other
revision through ``PYTHONPATH``), then alternates 5 s wrk GET runs (32 and 1
connections; the order flips every round) and prints median req/s and the
gateway process's CPU time per request (from /proc: robust to other load on
the machine, which req/s is not). Needs wrk, like ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children still running (``--workers``: the workers)."""
    used = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def backends_cpu(pg: bench.Postgres | None, db: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving ``db`` (the server runs on this
    machine): the database's share of a write, which the gateway's own CPU does not show.
    Client backends only: an autovacuum worker on the database comes when it likes."""
    if pg is None:
        return {}
    name = db.rsplit("/", 1)[1]
    rows = asyncio.run(pg.fetch(pg.server, "SELECT pid FROM pg_stat_activity "
                                f"WHERE datname = '{name}' AND backend_type = 'client backend'"))
    used = {}
    for (pid,) in rows:
        try:
            used[pid] = cpu_seconds(pid)
        except OSError:  # gone since the query
            pass
    return used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="source tree of the other revision")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--after", type=Path, help="source tree of the revision measured against "
                    "--before (default: the installed one)")
    ap.add_argument("--method", choices=("GET", "PATCH"), default="GET")
    ap.add_argument("--postgres", metavar="SERVER_URL", help="journal on fresh databases of "
                    "this PostgreSQL server (dropped at the end), not on SQLite files; e.g. "
                    + bench.POSTGRES)
    ap.add_argument("--workers", type=int, default=1, help="each gateway's --workers")
    args = ap.parse_args()
    pg = bench.Postgres(args.postgres) if args.postgres else None
    tmp = Path(tempfile.mkdtemp(prefix="ab-read-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    procs: list[bench.Proc] = []
    try:
        up = bench.Proc("upstream", [sys.executable, str(bench.HERE / "upstream.py")],
                        r"ready port=(\d+)", logdir)
        procs.append(up)
        config, policies = bench.write_gateway_config(tmp, f"http://127.0.0.1:{up.match.group(1)}")
        gateways = {}
        dbs = {}
        after = {} if args.after is None else {"PYTHONPATH": str(args.after.resolve())}
        for name, env in (("before", {"PYTHONPATH": str(args.before.resolve())}),
                          ("after", after)):
            db = pg.create() if pg else f"sqlite+aiosqlite:///{tmp / name}.db"
            workers = ("--workers", str(args.workers)) if args.workers > 1 else ()
            proc, proxy, _ = bench.start_gateway(name, config, policies, db, logdir, *workers,
                                                 env={"OTEL_SDK_DISABLED": "true", **env})
            procs.append(proc)
            gateways[name] = (proxy + "/bench" + bench.ITEM_PATH, proc.proc.pid)
            dbs[name] = db
            bench.wrk(gateways[name][0], args.method, 32, 2, bench.AGENT_KEY)  # warm-up
        rps: dict[tuple[str, int], list[float]] = {}
        p50: dict[tuple[str, int], list[float]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        pg_cpu: dict[tuple[str, int], list[float]] = {}
        for round_ in range(args.rounds):
            names = list(gateways) if round_ % 2 == 0 else list(reversed(gateways))
            for conns in (32, 1):
                for name in names:
                    url, pid = gateways[name]
                    began, pg_began = cpu_seconds(pid), backends_cpu(pg, dbs[name])
                    result = bench.wrk(url, args.method, conns, args.seconds, bench.AGENT_KEY)
                    used = cpu_seconds(pid) - began
                    pg_used = sum(now - pg_began.get(backend, 0.0)
                                  for backend, now in backends_cpu(pg, dbs[name]).items())
                    if result["failed"]:
                        raise SystemExit(f"{name}: {result['failed']} failed requests")
                    rps.setdefault((name, conns), []).append(result["rps"])
                    p50.setdefault((name, conns), []).append(result["p50_us"] / 1000)
                    cpu.setdefault((name, conns), []).append(
                        used / (result["rps"] * args.seconds) * 1e6)
                    pg_cpu.setdefault((name, conns), []).append(
                        pg_used / (result["rps"] * args.seconds) * 1e6)
        print(f"{args.method}, medians of {args.rounds} rounds, "
              f"{'PostgreSQL' if pg else 'SQLite'}, {args.workers} worker(s) each")
        print(f"{'target':<8}{'conns':>6}{'req/s':>9}{'p50 ms':>9}{'CPU us/req':>12}"
              + (f"{'PG CPU us/req':>15}" if pg else ""))
        for conns in (32, 1):
            for name in gateways:
                print(f"{name:<8}{conns:>6}{statistics.median(rps[(name, conns)]):>9.0f}"
                      f"{statistics.median(p50[(name, conns)]):>9.3f}"
                      f"{statistics.median(cpu[(name, conns)]):>12.1f}"
                      + (f"{statistics.median(pg_cpu[(name, conns)]):>15.1f}" if pg else ""))
            ratio = (statistics.median(rps[("after", conns)])
                     / statistics.median(rps[("before", conns)]))
            added = (statistics.median(p50[("after", conns)])
                     - statistics.median(p50[("before", conns)]))
            print(f"after/before req/s at {conns} connections: {ratio:.3f}; "
                  f"p50 after minus before: {added:+.3f} ms")
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        if pg:
            pg.drop_all()


if __name__ == "__main__":
    main()
