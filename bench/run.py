"""Gateway benchmark: direct upstream vs a bare aiohttp proxy vs the gateway.

    .venv/bin/python bench/run.py [--duration 10] [--warmup 2]

Starts three processes on 127.0.0.1 (upstream, bare proxy, `gateway serve`),
drives each with wrk (GET and PATCH, 1 and 32 connections), prints one table
plus the target checks, and writes bench/results/latest.json. See bench/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
AGENT_KEY = "bench-agent-key"
ADMIN_TOKEN = "bench-admin-token"
ITEM_PATH = "/items/42"
CONNECTIONS = {1: 1, 32: 2}  # connections -> wrk threads
BENCH_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)


class Proc:
    """A child process whose stdout is read on a thread (so it never blocks)."""

    def __init__(self, name: str, cmd: list[str], ready: str, logdir: Path,
                 timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.name, self.lines = name, queue.Queue()  # type: queue.Queue[str]
        self.tail: list[str] = []
        self.stderr_path = logdir / f"{name}.stderr.log"
        self.stderr = self.stderr_path.open("w")  # closed in stop()
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
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def write_gateway_config(tmp: Path, upstream_url: str) -> tuple[Path, Path, str]:
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    config = tmp / "settings.yaml"
    config.write_text(
        f'agents:\n  - name: bench-agent\n    key_sha256: "{sha(AGENT_KEY)}"\n'
        f'operators:\n  - name: bench-admin\n    role: admin\n'
        f'    token_sha256: "{sha(ADMIN_TOKEN)}"\n')
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "bench.yaml").write_text(
        f"version: 1\nupstream: bench\nbase_url: {upstream_url}\ndefault: deny\nrules:\n"
        "  - id: read-all\n    match: {methods: [GET], path: \"/**\"}\n    action: allow\n"
        "  - id: edit-item\n    match: {methods: [PATCH], path: \"/items/{id}\"}\n"
        "    action: allow\n")
    return config, policies, f"sqlite+aiosqlite:///{tmp / 'bench.db'}"


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
    env = dict(os.environ, BENCH_METHOD=method, BENCH_KEY=key or "")
    cmd = ["wrk", "-t", str(CONNECTIONS.get(conns, 2)), "-c", str(conns),
           "-d", f"{max(1, seconds)}s", "--timeout", "5s", "-s", str(HERE / "bench.lua"), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = BENCH_LINE.search(out.stdout)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    fields = dict(kv.split("=") for kv in found.group(1).split())
    r: dict[str, Any] = {k: float(v) if "." in v else int(v) for k, v in fields.items()}
    r["failed"] = sum(r[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
    return r


def check(name: str, value: float | None, op: str, target: float, unit: str) -> dict[str, Any]:
    met = value is not None and (value <= target if op == "<=" else value >= target)
    return {"check": name, "value": value, "op": op, "target": target, "unit": unit, "met": met}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=10,
                    help="seconds per measured run (whole seconds, as wrk takes them)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target/method")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    ap.add_argument("--no-tracing", dest="tracing", action="store_false",
                    help="skip the gateway+otel target (the same gateway, tracing on)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    gateway_bin = shutil.which("gateway") or str(Path(sys.executable).parent / "gateway")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` runs on SIGTERM too

    procs: list[Proc] = []
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    logdir = args.out.parent / "logs"  # each process's stderr, kept for a look afterwards
    logdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        up = Proc("upstream", [sys.executable, str(HERE / "upstream.py")],
                  r"ready port=(\d+)", logdir)
        procs.append(up)
        upstream_url = f"http://127.0.0.1:{up.match.group(1)}"
        print(f"upstream    {upstream_url}", flush=True)
        bare = Proc("bare-proxy", [sys.executable, str(HERE / "bare_proxy.py"),
                                   "--upstream", upstream_url], r"ready port=(\d+)", logdir)
        procs.append(bare)
        bare_url = f"http://127.0.0.1:{bare.match.group(1)}"
        print(f"bare proxy  {bare_url}", flush=True)
        config, policies, db_url = write_gateway_config(tmp, upstream_url)
        gw = Proc("gateway", [gateway_bin, "serve", "--config", str(config), "--policies",
                              str(policies), "--host", "127.0.0.1", "--port", "0",
                              "--admin-host", "127.0.0.1", "--admin-port", "0",
                              "--database-url", db_url],
                  r"gateway ready proxy=(\S+) admin=(\S+)", logdir, timeout=60,
                  env={"OTEL_SDK_DISABLED": "true"})  # tracing off, as by default
        procs.append(gw)
        gw_url, admin_url = gw.match.group(1), gw.match.group(2)
        print(f"gateway     {gw_url} (admin {admin_url}, db {db_url})", flush=True)
        targets = [("direct", upstream_url + ITEM_PATH, None),
                   ("bare proxy", bare_url + ITEM_PATH, None),
                   ("gateway", gw_url + "/bench" + ITEM_PATH, AGENT_KEY)]
        sink_url = None
        if args.tracing:  # the same gateway with OpenTelemetry tracing on, exporting OTLP
            sink = Proc("otlp-sink", [sys.executable, str(HERE / "otlp_sink.py")],
                        r"ready port=(\d+)", logdir)
            procs.append(sink)
            sink_url = f"http://127.0.0.1:{sink.match.group(1)}"
            traced = Proc("gateway-otel", [
                gateway_bin, "serve", "--config", str(config), "--policies", str(policies),
                "--host", "127.0.0.1", "--port", "0", "--admin-host", "127.0.0.1",
                "--admin-port", "0", "--database-url", db_url.replace("bench.db", "otel.db")],
                r"gateway ready proxy=(\S+) admin=(\S+)", logdir, timeout=60,
                env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url})
            procs.append(traced)
            print(f"gateway+otel {traced.match.group(1)} (spans to {sink_url})", flush=True)
            targets.append(("gw+otel", traced.match.group(1) + "/bench" + ITEM_PATH, AGENT_KEY))
        for target, url, key in targets:
            for method in ("GET", "PATCH"):
                wrk(url, method, 4, args.warmup, key)  # warm-up: connection pools, lazy init
                for conns in CONNECTIONS:
                    r = wrk(url, method, conns, args.duration, key)
                    r.update(target=target, method=method, connections=conns)
                    results.append(r)
                    print(f"  {target:<10} {method:<5} c={conns:<2} p50={r['p50_us'] / 1000:.3f}ms "
                          f"p99={r['p99_us'] / 1000:.3f}ms {r['rps']:.0f} req/s "
                          f"failed={r['failed']}", flush=True)
                    if r["failed"]:
                        failures.append(f"{target} {method} c={conns}: {r['failed']} of "
                                        f"{r['requests']} failed (non2xx={r['non2xx']}, connect="
                                        f"{r['connect']}, read={r['read']}, write={r['write']}, "
                                        f"timeout={r['timeout']}); a probe now answers: "
                                        f"{probe(url, method, key)}")
        req = urllib.request.Request(admin_url + "/v1/journal?limit=1",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            journal = json.loads(resp.read()).get("items", [])
        if not journal:
            failures.append("gateway journal is empty after the PATCH runs")
        if sink_url is not None:
            with urllib.request.urlopen(sink_url + "/stats", timeout=5) as resp:
                exported = json.loads(resp.read())
            print(f"otlp sink received {exported['exports']} span exports "
                  f"({exported['bytes']} bytes)", flush=True)
            if not exported["exports"]:
                failures.append("the traced gateway exported no spans")
    finally:
        for p in reversed(procs):
            p.stop()
        for p in procs:
            if p.proc.returncode not in (0, -signal.SIGTERM):
                print(f"note: {p.name} exited with {p.proc.returncode}\n{p.logs()}")
        gw_logs = next((p.logs() for p in procs if p.name == "gateway"), "")
        shutil.rmtree(tmp, ignore_errors=True)

    def get(target: str, method: str, conns: int, field: str) -> float:
        return next(r[field] for r in results if (r["target"], r["method"],
                                                   r["connections"]) == (target, method, conns))

    load_after = os.getloadavg()
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
          f"{os.cpu_count()} CPUs; wrk, upstream and proxy share them, so other load skews it")
    print(f"\n{'target':<11}{'method':<7}{'conns':>5}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'req/s':>10}{'failed':>8}")
    for r in results:
        print(f"{r['target']:<11}{r['method']:<7}{r['connections']:>5}{r['p50_us'] / 1000:>10.3f}"
              f"{r['p99_us'] / 1000:>10.3f}{r['rps']:>10.0f}{r['failed']:>8}")
    checks = [
        check("added read p50 (gateway GET - direct GET, c=1)",
              (get("gateway", "GET", 1, "p50_us") - get("direct", "GET", 1, "p50_us")) / 1000,
              "<=", 0.3, "ms"),
        check("gateway GET req/s c=32 / bare proxy's",
              get("gateway", "GET", 32, "rps") / get("bare proxy", "GET", 32, "rps"),
              ">=", 0.8, "x"),
        check("gateway GET req/s c=32 / gateway's at c=1",
              get("gateway", "GET", 32, "rps") / get("gateway", "GET", 1, "rps"), ">=", 2.0, "x"),
        check("added PATCH p50 (gateway PATCH - direct GET - direct PATCH, c=1)",
              (get("gateway", "PATCH", 1, "p50_us") - get("direct", "GET", 1, "p50_us")
               - get("direct", "PATCH", 1, "p50_us")) / 1000, "<=", 0.8, "ms"),
    ]
    if args.tracing:
        for method in ("GET", "PATCH"):
            on, off = get("gw+otel", method, 1, "p50_us"), get("gateway", method, 1, "p50_us")
            print(f"tracing on, {method} c=1: p50 {on / 1000:.3f} ms vs {off / 1000:.3f} ms off "
                  f"(+{(on - off) / 1000:.3f} ms, x{on / off:.2f}); req/s c=32 "
                  f"{get('gw+otel', method, 32, 'rps'):.0f} vs {get('gateway', method, 32, 'rps'):.0f}")
    if failures:  # a number measured on errors judges nothing
        for c in checks:
            c["met"] = None
    print()
    for c in checks:
        label = {True: "met    ", False: "NOT MET", None: "INVALID"}[c["met"]]
        print(f"{label}  {c['check']}: {c['value']:.3f} {c['unit']}"
              f" (target {c['op']} {c['target']} {c['unit']})")
    for f in failures:
        print(f"FAILED REQUESTS  {f}")
    if failures:
        print("The numbers above include failed requests and are not a valid benchmark.\n"
              f"Gateway log tail:\n{gw_logs}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": args.duration, "warmup_s": args.warmup,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform(), "loadavg_before": load_before,
                 "loadavg_after": load_after},
        "runs": results, "checks": checks, "failures": failures,
        "valid": not failures}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
