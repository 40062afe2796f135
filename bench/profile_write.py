"""Profile the gateway's PATCH path (and, with --engage, the kill switch) with py-spy.

    .venv/bin/python bench/profile_write.py --store sqlite|postgres [--seconds 8]
                                            [--conns 32] [--engage N]

Starts bench/upstream.py and one ``gateway serve`` (the bench's config), drives
PATCHes with wrk and samples the gateway with ``py-spy record`` (raw folded
stacks, --idle so time spent waiting shows). Prints the top frames by own
samples and by inclusive samples in gateway code. With ``--engage N`` a second
gateway on the same PostgreSQL engages and releases N times while wrk writes
into the first, both sampled, and each engage's phases are read from the
engaging gateway's "kill switch engaged" log lines (gateway/services/killswitch.py).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

HERE = Path(__file__).resolve().parent
PYSPY = str(Path(sys.executable).parent / "py-spy")


def top(raw: Path, n: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        if not any("gateway/server.py" in f for f in frames):
            continue  # idle worker threads (aiosqlite's, the executor's): the loop's thread only
        total += c
        own[frames[-1]] += c
        for f in set(frames):
            if "gateway/" in f or "asyncpg" in f or "sqlite" in f or "uvicorn" in f:
                incl[f] += c
    out = [f"samples on the event loop's thread {total}", "-- own --"]
    out += [f"{c / total * 100:5.1f}% {f}" for f, c in own.most_common(n)]
    out += ["-- inclusive (gateway/asyncpg/uvicorn frames) --"]
    out += [f"{c / total * 100:5.1f}% {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--engage", type=int, default=0)
    ap.add_argument("--method", choices=("GET", "PATCH"), default="PATCH",
                    help="what wrk sends (GET: the read path)")
    ap.add_argument("--out", default=str(HERE / "results" / "profile"))
    ap.add_argument("--tree", type=Path, help="run the gateways from this source tree "
                    "(PYTHONPATH; e.g. `git archive REV | tar -x -C DIR`), to compare")
    ap.add_argument("--no-spy", action="store_true", help="time only, no sampling")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-prof-"))
    procs: list[bench.Proc] = []
    pg = bench.Postgres(bench.POSTGRES)
    try:
        up = bench.Proc("prof-upstream", [sys.executable, str(HERE / "upstream.py")]
                        + (["--record"] if args.engage else []),
                        r"ready port=(\d+)", out)
        procs.append(up)
        upstream_url = f"http://127.0.0.1:{up.match.group(1)}"
        config, policies = bench.write_gateway_config(tmp, upstream_url)
        db = (pg.create() if args.store == "postgres" or args.engage
              else f"sqlite+aiosqlite:///{tmp}/gw.db")
        env = {"OTEL_SDK_DISABLED": "true"}
        if args.tree is not None:
            env["PYTHONPATH"] = str(args.tree.resolve())
        a, a_proxy, _ = bench.start_gateway("prof-a", config, policies, db, out, env=env)
        procs.append(a)
        pids = [str(a.proc.pid)]
        b_admin = None
        if args.engage:
            b, _, b_admin = bench.start_gateway("prof-b", config, policies, db, out, env=env)
            procs.append(b)
            pids.append(str(b.proc.pid))
        envw = dict(os.environ, BENCH_METHOD=args.method, BENCH_KEY=bench.AGENT_KEY,
                    BENCH_NONCE=uuid.uuid4().hex)
        seconds = args.seconds if not args.engage else 600
        wrk = subprocess.Popen(
            ["wrk", "-t", "2" if args.conns > 1 else "1", "-c", str(args.conns), "-d",
             f"{seconds}s", "--timeout", "5s", "-s", str(HERE / "bench.lua"),
             a_proxy + "/bench" + bench.ITEM_PATH], env=envw, stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        spies = [subprocess.Popen([PYSPY, "record", "-p", pid, "-d", str(max(1, args.seconds - 2)),
                                   "-r", "200", "-f", "raw", "--idle", "-o",
                                   str(out / f"{args.store}-{name}.raw")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid, name in zip(pids, ("a", "b")) if not args.no_spy]
        lat = []
        if args.engage:
            assert b_admin is not None
            for n in range(args.engage):
                t0 = time.monotonic()
                status, _ = bench.call("POST", b_admin + "/v1/killswitch/engage",
                                       {"reason": f"prof {n}"}, bench.ADMIN_TOKEN)
                lat.append((time.monotonic() - t0) * 1000)
                assert status == 200, status
                time.sleep(0.03)
                bench.call("POST", b_admin + "/v1/killswitch/release", {"reason": "p"},
                           bench.ADMIN_TOKEN)
                time.sleep(0.05)
            wrk.terminate()
        for s in spies:
            s.wait()
        print(wrk.communicate()[0][-400:])
        for name in ("a", "b")[:len(pids)]:
            raw = out / f"{args.store}-{name}.raw"
            if raw.exists() and not args.no_spy:
                print(f"===== {args.store} gateway {name}")
                print(top(raw))
        if lat:
            lat.sort()
            p99 = lat[min(len(lat) - 1, int(len(lat) * .99))]
            print(f"engage ms p50 {lat[len(lat) // 2]:.2f} p90 {lat[int(len(lat) * .9)]:.2f} "
                  f"p99 {p99:.2f} max {lat[-1]:.2f}")
            trace = [ln for ln in Path(procs[-1].stderr_path).read_text().splitlines()
                     if "kill switch engaged" in ln]
            phases: dict[str, list[float]] = collections.defaultdict(list)
            for line in trace:
                phased = re.sub(r"answers of \d+ processes", "answers", line.split("ms:", 1)[1])
                for name, value in re.findall(r"([a-z ]+?) ([0-9.]+)[,;]", phased):
                    phases[name.strip()].append(float(value))
            for name, values in phases.items():
                values.sort()
                print(f"  {name:32s} p50 {values[len(values) // 2]:7.2f}  p90 "
                      f"{values[int(len(values) * .9)]:7.2f}  max {values[-1]:7.2f} ms")
    finally:
        for p in reversed(procs):
            p.stop()
        pg.drop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
