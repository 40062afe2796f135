"""Gateway benchmark: direct upstream vs a bare aiohttp proxy vs the gateway, in one run.

    .venv/bin/python bench/run.py [--duration 10] [--warmup 2] [--repeat 1]
                                  [--postgres URL] [--engage-rounds 200] [--engage-only]

Starts the upstream and the bare proxy on 127.0.0.1 (twice: plain, and making
the same capture GET before each write as the gateway does), then the
gateways (SQLite; SQLite with --workers 2; SQLite without the intent fsync;
PostgreSQL) and drives each with wrk (GET and PATCH, 1 and 32 connections,
targets in alternating order from round to round); then the kill-switch run: two gateway
processes on one PostgreSQL, PATCHes streaming into one while the other
engages and releases. Prints one table (medians over --repeat rounds) and the
target checks, and writes bench/results/latest.json. See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
AGENT_KEY = "bench-agent-key"
ADMIN_TOKEN = "bench-admin-token"
ITEM_PATH = "/items/42"
THREADS = {1: 1, 32: 2}  # connections -> wrk threads
BENCH_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)
POSTGRES = os.environ.get("GATEWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
# (target, method, connections) measured, in this order, every round
ROWS = [("direct", m, c) for m in ("GET", "PATCH") for c in (1, 32)] \
    + [("bare proxy", m, c) for m in ("GET", "PATCH") for c in (1, 32)] \
    + [("bare+capture", "PATCH", c) for c in (1, 32)] \
    + [("gateway", m, c) for m in ("GET", "PATCH") for c in (1, 32)] \
    + [("gateway x2", m, 32) for m in ("GET", "PATCH")] \
    + [("gw no fsync", "PATCH", c) for c in (1, 32)] \
    + [("gateway pg", "PATCH", c) for c in (1, 32)]
TRACED = [("gw+otel", m, c) for m in ("GET", "PATCH") for c in (1, 32)]  # unless --no-tracing


class Proc:
    """A child process whose stdout is read on a thread (so it never blocks)."""

    def __init__(self, name: str, cmd: list[str], ready: str, logdir: Path,
                 timeout: float = 60.0, env: dict[str, str] | None = None) -> None:
        self.name, self.lines = name, queue.Queue()  # type: queue.Queue[str]
        self.tail: list[str] = []
        self.stderr_path = logdir / f"{name}.stderr.log"
        self.stderr = self.stderr_path.open("a")  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     stderr=self.stderr, cwd=HERE.parent,
                                     env={**os.environ, **(env or {})})
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready:\n{self.logs()}") from None
                continue
            self.match = re.search(ready, line)
            if self.match:
                break

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail = (self.tail + [line.rstrip()])[-50:]
            self.lines.put(line)

    def logs(self) -> str:
        err = self.stderr_path.read_text(errors="replace").splitlines()[-30:]
        return "\n".join([f"[{self.name} stdout] {x}" for x in self.tail]
                         + [f"[{self.name} stderr] {x}" for x in err])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def write_gateway_config(tmp: Path, upstream_url: str) -> tuple[Path, Path]:
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    config = tmp / "settings.yaml"
    config.write_text(
        f'agents:\n  - name: bench-agent\n    key_sha256: "{sha(AGENT_KEY)}"\n'
        f'operators:\n  - name: bench-admin\n    role: admin\n'
        f'    token_sha256: "{sha(ADMIN_TOKEN)}"\n')
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "bench.yaml").write_text(
        f"version: 1\nupstream: bench\nbase_url: {upstream_url}\ndefault: deny\nrules:\n"
        "  - id: read-all\n    match: {methods: [GET], path: \"/**\"}\n    action: allow\n"
        "  - id: edit-item\n    match: {methods: [PATCH], path: \"/items/{id}\"}\n"
        "    action: allow\n")
    return config, policies


class Postgres:
    """Fresh databases on the bench's PostgreSQL server, dropped at the end."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.names: list[str] = []

    async def _run(self, sql: str) -> None:
        import asyncpg
        connection = await asyncpg.connect(self.server, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def fetch(self, url: str, sql: str) -> list[Any]:
        import asyncpg
        connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    def create(self) -> str:
        name = f"gw_bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._run(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        base, _, _ = self.server.rpartition("/")
        return f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)

    def drop_all(self) -> None:
        for name in self.names:
            try:
                asyncio.run(self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the results
                print(f"note: could not drop {name}: {exc}")
        self.names.clear()


def start_gateway(name: str, config: Path, policies: Path, db_url: str, logdir: Path,
                  *flags: str, env: dict[str, str] | None = None) -> tuple[Proc, str, str]:
    """A ``gateway serve``; tracing off (as by default) unless ``env`` turns it on."""
    gateway_bin = shutil.which("gateway") or str(Path(sys.executable).parent / "gateway")
    proc = Proc(name, [gateway_bin, "serve", "--config", str(config), "--policies",
                       str(policies), "--host", "127.0.0.1", "--port", "0",
                       "--admin-host", "127.0.0.1", "--admin-port", "0",
                       "--database-url", db_url, *flags],
                r"gateway ready proxy=(\S+) admin=(\S+)", logdir, timeout=120,
                env=env or {"OTEL_SDK_DISABLED": "true"})
    return proc, proc.match.group(1), proc.match.group(2)


def call(method: str, url: str, body: dict[str, Any] | None = None,
         token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(300)


def probe(url: str, method: str, key: str | None) -> str:
    """One request outside wrk, to show what a failing target answers."""
    body = b'{"qty":8,"name":"Widget renamed"}' if method == "PATCH" else None
    req = urllib.request.Request(url, data=body, method=method)
    if body:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("X-Gateway-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return f"{resp.status} {resp.read(300)!r}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(300)!r}"
    except OSError as exc:
        return f"no response: {exc}"


def wrk(url: str, method: str, conns: int, seconds: int, key: str | None) -> dict[str, Any]:
    env = dict(os.environ, BENCH_METHOD=method, BENCH_KEY=key or "", BENCH_NONCE=uuid.uuid4().hex)
    cmd = ["wrk", "-t", str(THREADS.get(conns, 2)), "-c", str(conns),
           "-d", f"{max(1, seconds)}s", "--timeout", "5s", "-s", str(HERE / "bench.lua"), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = BENCH_LINE.search(out.stdout)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    fields = dict(kv.split("=") for kv in found.group(1).split())
    r: dict[str, Any] = {k: float(v) if "." in v else int(v) for k, v in fields.items()}
    r["failed"] = sum(r[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
    return r


class Runner:
    def __init__(self, args: argparse.Namespace, logdir: Path, tmp: Path) -> None:
        self.args, self.logdir, self.tmp = args, logdir, tmp
        self.runs: list[dict[str, Any]] = []
        self.failures: list[str] = []

    def measure_round(self, targets: dict[str, tuple[str, str | None, Proc | None]],
                      round_: int) -> None:
        """Every row once, each row's targets back to back (so a ratio compares runs
        that saw the same load, in the opposite order every other round, so that
        neither side of a ratio always runs first); a warm-up for each target
        before its first method."""
        if round_ % 2:
            targets = dict(reversed(list(targets.items())))
        for method in ("GET", "PATCH"):
            for target, (url, key, _) in targets.items():
                if any(t == target and m == method for t, m, _ in ROWS + TRACED):
                    wrk(url, method, 4, self.args.warmup, key)  # pools, lazy init
            for conns in (1, 32):
                for target, (url, key, gateway) in targets.items():
                    if (target, method, conns) in ROWS + TRACED:
                        self._one(target, url, key, gateway, method, conns, round_)

    def _one(self, target: str, url: str, key: str | None, gateway: Proc | None, method: str,
             conns: int, round_: int) -> None:
        r = wrk(url, method, conns, self.args.duration, key)
        r.update(target=target, method=method, connections=conns, round=round_)
        self.runs.append(r)
        print(f"  {target:<11} {method:<5} c={conns:<2} p50={r['p50_us'] / 1000:.3f}ms "
              f"p99={r['p99_us'] / 1000:.3f}ms {r['rps']:.0f} req/s "
              f"failed={r['failed']}", flush=True)
        if r["failed"]:
            self.failures.append(
                f"{target} {method} c={conns}: {r['failed']} of {r['requests']} failed "
                f"(non2xx={r['non2xx']}, connect={r['connect']}, read={r['read']}, "
                f"write={r['write']}, timeout={r['timeout']}); a probe now answers: "
                f"{probe(url, method, key)}" + (f"\n{gateway.logs()}" if gateway else ""))


def engage_run(args: argparse.Namespace, pg: Postgres, logdir: Path, tmp: Path,
               ) -> dict[str, Any]:
    """Two gateways on one PostgreSQL; PATCHes into A while B engages and releases.

    An engage's latency bounds "engage -> last covered write stopped": when it
    returns, nothing it covers may leave any process. Late writes are covered
    arrivals (PATCH, or a capture GET) logged by the upstream after the
    marker written once engage returned and before the one written before the
    release.
    """
    procs: list[Proc] = []
    loader: subprocess.Popen[str] | None = None
    try:
        up = Proc("engage-upstream", [sys.executable, str(HERE / "upstream.py"), "--record"],
                  r"ready port=(\d+)", logdir)
        procs.append(up)
        upstream_url = f"http://127.0.0.1:{up.match.group(1)}"
        (tmp / "engage").mkdir()
        config, policies = write_gateway_config(tmp / "engage", upstream_url)
        db_url = pg.create()
        a, a_proxy, _ = start_gateway("engage-gateway-a", config, policies, db_url, logdir)
        procs.append(a)
        b, _, b_admin = start_gateway("engage-gateway-b", config, policies, db_url, logdir)
        procs.append(b)
        env = dict(os.environ, BENCH_METHOD="PATCH", BENCH_KEY=AGENT_KEY,
                   BENCH_NONCE=uuid.uuid4().hex)
        loader = subprocess.Popen(
            ["wrk", "-t", "2", "-c", "8", "-d", "600s", "--timeout", "5s", "-s",
             str(HERE / "bench.lua"), a_proxy + "/bench" + ITEM_PATH], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        latencies, stops, late, in_flight = [], [], 0, 0
        for n in range(args.engage_rounds):
            seen = _patches(upstream_url)
            deadline = time.monotonic() + 30
            while _patches(upstream_url) < seen + 8:  # writes are landing again
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no writes reached the upstream:\n{a.logs()}")
                time.sleep(0.005)
            started = time.monotonic()
            status, body = call("POST", b_admin + "/v1/killswitch/engage",
                                {"reason": f"bench {n}"}, ADMIN_TOKEN)
            returned = time.monotonic()
            if status != 200:
                raise RuntimeError(f"engage answered {status}: {body!r}\n{b.logs()}")
            latencies.append((returned - started) * 1000)
            in_flight += len(body["in_flight"])
            call("POST", f"{upstream_url}/_mark/engaged-{n}")
            time.sleep(0.03)  # room for a late write to show itself
            call("POST", f"{upstream_url}/_mark/release-{n}")
            call("POST", b_admin + "/v1/killswitch/release", {"reason": "bench"}, ADMIN_TOKEN)
            stops.append((started, returned))
        _, log = call("GET", f"{upstream_url}/_log")
        marks = {path: i for i, (_, method, path) in enumerate(log) if method == "MARK"}
        for n, (started, _) in enumerate(stops):
            window = log[marks[f"engaged-{n}"] + 1:marks[f"release-{n}"]]
            late += sum(1 for _, method, path in window if path.startswith("/items/"))
            before = [at for at, method, path in log[:marks[f"engaged-{n}"]]
                      if method == "PATCH" and at >= started]
            stops[n] = (started, max(before, default=started))
        last_write = [(last - started) * 1000 for started, last in stops]
        loader.terminate()
        loader.wait()
        loader = None
        for p in (a, b):  # a clean stop journals every outcome still on its way
            p.stop()
        # in_flight is exact when it names every write an engage cut off: those and
        # only those are `unknown`; and no entry is left an intent
        states = dict(asyncio.run(pg.fetch(db_url, "SELECT state, count(*) FROM journal "
                                                   "GROUP BY state")))
        return {"rounds": args.engage_rounds, "latency_ms": _summary(latencies),
                "last_write_after_engage_ms": _summary(last_write),
                "late_writes": late, "in_flight_reported": in_flight,
                "journal_states": states,
                "in_flight_mismatch": abs(in_flight - states.get("unknown", 0))
                + states.get("intent", 0)}
    finally:
        if loader is not None:
            loader.terminate()
            loader.wait()
        for p in reversed(procs):
            p.stop()


def _patches(upstream_url: str) -> int:
    _, log = call("GET", f"{upstream_url}/_log")
    return sum(1 for _, method, _ in log if method == "PATCH")


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p99": p99, "max": ordered[-1]}


def floors(tmp: Path, pg: Postgres, samples: int = 400) -> dict[str, float]:
    """What durability costs at the least on this machine, measured in the same run: an
    ``fdatasync`` after a 4 KiB write in the directory the SQLite journal lives in, and a
    one-row INSERT committed on the bench's PostgreSQL over one asyncpg connection (a
    round trip and the server's WAL flush). No journal can commit an intent for less."""
    fd = os.open(tmp / "floor.bin", os.O_RDWR | os.O_CREAT, 0o600)
    synced = []
    try:
        for i in range(samples):
            os.pwrite(fd, b"x" * 4096, (i % 64) * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            synced.append(time.perf_counter() - started)
    finally:
        os.close(fd)

    database = pg.create().replace("+asyncpg", "")

    async def committed() -> list[float]:
        import asyncpg
        connection = await asyncpg.connect(database, timeout=5)
        try:
            await connection.execute("CREATE TABLE floor (id serial PRIMARY KEY, at float8)")
            insert = await connection.prepare("INSERT INTO floor (at) VALUES ($1)")
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                await insert.fetch(started)
                times.append(time.perf_counter() - started)
            return times
        finally:
            await connection.close()

    return {"fdatasync_ms": statistics.median(synced) * 1000,
            "postgres_commit_ms": statistics.median(asyncio.run(committed())) * 1000}


def check(name: str, value: float | None, op: str, target: float, unit: str) -> dict[str, Any]:
    met = value is not None and (value <= target if op == "<=" else value >= target)
    return {"check": name, "value": value, "op": op, "target": target, "unit": unit, "met": met}


def engage_alone(args: argparse.Namespace) -> int:
    """``--engage-only``: the kill-switch run and its checks, nothing else (another
    revision's gateways: ``PYTHONPATH=<its tree>``, which every process inherits)."""
    pg = Postgres(args.postgres)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    logdir = args.out.parent / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        engage = engage_run(args, pg, logdir, tmp)
    finally:
        pg.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    lat, last = engage["latency_ms"], engage["last_write_after_engage_ms"]
    print(f"engage latency p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f} ms; "
          f"last covered write p50 {last['p50']:.2f} p99 {last['p99']:.2f} ms after engage "
          f"began; {engage['late_writes']} late writes; {engage['in_flight_reported']} "
          f"reported in flight, mismatch {engage['in_flight_mismatch']}; "
          f"{engage['rounds']} rounds; load {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    ok = lat["p99"] <= 10.0 and engage["late_writes"] == 0 and not engage["in_flight_mismatch"]
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=10,
                    help="seconds per measured run (whole seconds, as wrk takes them)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target/method")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    ap.add_argument("--postgres", default=POSTGRES,
                    help="PostgreSQL server for the write rows and the kill-switch run "
                         "(env GATEWAY_BENCH_POSTGRES)")
    ap.add_argument("--engage-rounds", type=int, default=200,
                    help="engages timed; under 100 the p99 is the slowest one (default 200)")
    ap.add_argument("--engage-only", action="store_true",
                    help="only the kill-switch run (two gateways on PostgreSQL)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    ap.add_argument("--no-tracing", dest="tracing", action="store_false",
                    help="skip the gw+otel target (the same gateway with tracing on, exporting "
                         "OTLP to a stand-in collector)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` runs on SIGTERM too
    if args.engage_only:
        return engage_alone(args)

    procs: list[Proc] = []
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    logdir = args.out.parent / "logs"  # each process's stderr, kept for a look afterwards
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob("*.log"):
        old.unlink()
    load_before = os.getloadavg()
    pg = Postgres(args.postgres)
    runner = Runner(args, logdir, tmp)
    engage: dict[str, Any] = {}
    try:
        asyncio.run(pg._run("SELECT 1"))  # reachable? fail before anything else starts
        up = Proc("upstream", [sys.executable, str(HERE / "upstream.py")],
                  r"ready port=(\d+)", logdir)
        procs.append(up)
        upstream_url = f"http://127.0.0.1:{up.match.group(1)}"
        bare = Proc("bare-proxy", [sys.executable, str(HERE / "bare_proxy.py"),
                                   "--upstream", upstream_url], r"ready port=(\d+)", logdir)
        procs.append(bare)
        bare_url = f"http://127.0.0.1:{bare.match.group(1)}"
        capturing = Proc("bare-capture", [sys.executable, str(HERE / "bare_proxy.py"),
                                          "--upstream", upstream_url, "--capture"],
                         r"ready port=(\d+)", logdir)
        procs.append(capturing)
        capture_url = f"http://127.0.0.1:{capturing.match.group(1)}"
        config, policies = write_gateway_config(tmp, upstream_url)
        print(f"upstream {upstream_url}, bare proxy {bare_url}", flush=True)
        sink_url = None
        if args.tracing:
            sink = Proc("otlp-sink", [sys.executable, str(HERE / "otlp_sink.py")],
                        r"ready port=(\d+)", logdir)
            procs.append(sink)
            sink_url = f"http://127.0.0.1:{sink.match.group(1)}"
        for round_ in range(args.repeat):
            print(f"round {round_ + 1} of {args.repeat}", flush=True)
            targets: dict[str, tuple[str, str | None, Proc | None]] = {
                "direct": (upstream_url + ITEM_PATH, None, None),
                "bare proxy": (bare_url + ITEM_PATH, None, None),
                "bare+capture": (capture_url + ITEM_PATH, None, None)}
            gateways: list[Proc] = []
            try:  # idle gateways cost next to nothing: all up, measured row by row
                for target, flags, db_url, env in (
                        ("gateway", (), f"sqlite+aiosqlite:///{tmp / f'bench-{round_}.db'}",
                         None),
                        ("gateway x2", ("--workers", "2"),
                         f"sqlite+aiosqlite:///{tmp / f'bench-x2-{round_}.db'}", None),
                        ("gw no fsync", (), f"sqlite+aiosqlite:///{tmp / f'bench-nf-{round_}.db'}",
                         {"OTEL_SDK_DISABLED": "true", "GATEWAY_JOURNAL_FSYNC": "false"}),
                        ("gateway pg", (), pg.create(), None)):
                    gw, proxy, _ = start_gateway(target.replace(" ", "-"), config, policies,
                                                 db_url, logdir, *flags, env=env)
                    gateways.append(gw)
                    targets[target] = (proxy + "/bench" + ITEM_PATH, AGENT_KEY, gw)
                if sink_url is not None:
                    gw, proxy, _ = start_gateway(
                        "gw-otel", config, policies,
                        f"sqlite+aiosqlite:///{tmp / f'bench-otel-{round_}.db'}", logdir,
                        env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url})
                    gateways.append(gw)
                    targets["gw+otel"] = (proxy + "/bench" + ITEM_PATH, AGENT_KEY, gw)
                runner.measure_round(targets, round_)
            finally:
                for gw in gateways:
                    gw.stop()
        floor = floors(tmp, pg)
        print("kill switch: 2 processes on PostgreSQL, PATCHes into one, the other engages",
              flush=True)
        engage = engage_run(args, pg, logdir, tmp)
        if sink_url is not None:
            with urllib.request.urlopen(sink_url + "/stats", timeout=5) as resp:
                exported = json.loads(resp.read())
            print(f"otlp sink received {exported['exports']} span exports "
                  f"({exported['bytes']} bytes)", flush=True)
            if not exported["exports"]:
                runner.failures.append("the traced gateway exported no spans")
        print(f"  engage latency p50={engage['latency_ms']['p50']:.2f}ms "
              f"p99={engage['latency_ms']['p99']:.2f}ms, late writes {engage['late_writes']}",
              flush=True)
    finally:
        for p in reversed(procs):
            p.stop()
        pg.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    def get(target: str, method: str, conns: int, field: str) -> float:
        return statistics.median(r[field] for r in runner.runs if (
            r["target"], r["method"], r["connections"]) == (target, method, conns))

    load_after = os.getloadavg()
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
          f"{os.cpu_count()} CPUs; wrk, upstream and proxy share them, so other load skews it")
    print(f"\n{'target':<12}{'method':<7}{'conns':>5}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'req/s':>10}{'failed':>8}   (medians of {args.repeat})")
    for target, method, conns in ROWS + (TRACED if args.tracing else []):
        failed = sum(r["failed"] for r in runner.runs
                     if (r["target"], r["method"], r["connections"]) == (target, method, conns))
        print(f"{target:<12}{method:<7}{conns:>5}{get(target, method, conns, 'p50_us') / 1000:>10.3f}"
              f"{get(target, method, conns, 'p99_us') / 1000:>10.3f}"
              f"{get(target, method, conns, 'rps'):>10.0f}{failed:>8}")

    def p50(target: str, method: str, conns: int) -> float:
        return get(target, method, conns, "p50_us") / 1000

    def rps(target: str, method: str, conns: int) -> float:
        return get(target, method, conns, "rps")

    checks = [
        check("read req/s c=32, gateway / bare proxy", rps("gateway", "GET", 32)
              / rps("bare proxy", "GET", 32), ">=", 0.9, "x"),
        check("read p50 c=1, gateway - bare proxy",
              p50("gateway", "GET", 1) - p50("bare proxy", "GET", 1), "<=", 0.05, "ms"),
        check("PATCH req/s c=32, gateway SQLite (fsync on) / bare+capture",
              rps("gateway", "PATCH", 32) / rps("bare+capture", "PATCH", 32), ">=", 0.7, "x"),
        check("PATCH req/s c=32, gateway PostgreSQL / bare+capture",
              rps("gateway pg", "PATCH", 32) / rps("bare+capture", "PATCH", 32), ">=", 0.6, "x"),
        check("PATCH p50 c=1, gateway SQLite (fsync on) - bare+capture",
              p50("gateway", "PATCH", 1) - p50("bare+capture", "PATCH", 1), "<=", 0.3, "ms"),
        check("PATCH p50 c=1, gateway PostgreSQL - bare+capture",
              p50("gateway pg", "PATCH", 1) - p50("bare+capture", "PATCH", 1), "<=", 0.5, "ms"),
        check("--workers 2 / 1, read req/s c=32",
              rps("gateway x2", "GET", 32) / rps("gateway", "GET", 32), ">=", 1.25, "x"),
        check("--workers 2 / 1, PATCH req/s c=32",
              rps("gateway x2", "PATCH", 32) / rps("gateway", "PATCH", 32), ">=", 1.4, "x"),
        check("engage latency p99, 2 processes on PostgreSQL (bounds the last covered write)",
              engage["latency_ms"]["p99"], "<=", 10.0, "ms"),
        check("late writes after engage returned", engage["late_writes"], "<=", 0, ""),
        check("in_flight vs the journal: |reported - unknown entries| + entries left intent",
              engage["in_flight_mismatch"], "<=", 0, ""),
    ]
    durability = {  # what the fsync of SQLite intents costs: the same gateway without it
        "patch_p50_c1_ms": {"fsync on": p50("gateway", "PATCH", 1),
                            "fsync off": p50("gw no fsync", "PATCH", 1)},
        "patch_rps_c32": {"fsync on": rps("gateway", "PATCH", 32),
                          "fsync off": rps("gw no fsync", "PATCH", 32)}}
    print(f"durability (SQLite): PATCH p50 c=1 {durability['patch_p50_c1_ms']['fsync on']:.3f} ms "
          f"with fsync vs {durability['patch_p50_c1_ms']['fsync off']:.3f} ms without; PATCH "
          f"req/s c=32 {durability['patch_rps_c32']['fsync on']:.0f} vs "
          f"{durability['patch_rps_c32']['fsync off']:.0f}")
    print(f"floors in this run: fdatasync of a 4 KiB write p50 {floor['fdatasync_ms']:.3f} ms "
          f"(SQLite's intent pays one); a one-row INSERT committed on PostgreSQL p50 "
          f"{floor['postgres_commit_ms']:.3f} ms (the PostgreSQL intent's round trip and WAL "
          f"flush). The c=1 PATCH rows' targets include these.")
    if args.tracing:
        for method in ("GET", "PATCH"):
            on, off = get("gw+otel", method, 1, "p50_us"), get("gateway", method, 1, "p50_us")
            print(f"tracing on, {method} c=1: p50 {on / 1000:.3f} ms vs {off / 1000:.3f} ms off "
                  f"(+{(on - off) / 1000:.3f} ms, x{on / off:.2f}); req/s c=32 "
                  f"{get('gw+otel', method, 32, 'rps'):.0f} vs "
                  f"{get('gateway', method, 32, 'rps'):.0f}")
    if runner.failures:  # a number measured on errors judges nothing
        for c in checks:
            c["met"] = None
    print()
    for c in checks:
        label = {True: "met    ", False: "NOT MET", None: "INVALID"}[c["met"]]
        print(f"{label}  {c['check']}: {c['value']:.3f} {c['unit']}"
              f" (target {c['op']} {c['target']} {c['unit']})")
    print(f"         engage: p50 {engage['latency_ms']['p50']:.2f} ms, last covered write "
          f"arrived p99 {engage['last_write_after_engage_ms']['p99']:.2f} ms after engage "
          f"began, {engage['in_flight_reported']} reported in flight, "
          f"{engage['rounds']} rounds")
    for f in runner.failures:
        print(f"FAILED REQUESTS  {f}")
    if runner.failures:
        print("The numbers above include failed requests and are not a valid benchmark.")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform(), "loadavg_before": load_before,
                 "loadavg_after": load_after},
        "runs": runner.runs, "engage": engage, "checks": checks, "durability": durability,
        "floors": floor,
        "failures": runner.failures,
        "valid": not runner.failures}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 1 if runner.failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
