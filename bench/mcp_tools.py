"""MCP benchmark: an allowed ``tools/call`` through the gateway vs straight to the server.

    .venv/bin/python bench/mcp_tools.py [--calls 2000] [--warmup 200] [--out FILE]

Starts the demo CRM's tools over MCP (the SDK's MCPServer, streamable HTTP,
stateless, JSON answers) and ``gateway serve`` in front of it with an MCP
policy, then sends 2026-07-28 ``tools/call`` POSTs over one keep-alive
connection per target, alternating direct and gateway call by call so both
see the same machine state. Reports medians, p90/p99 and the ratio:

- ``read``: ``get_customer``, a rule with ``effect: read`` (relayed, not journaled);
- ``write``: ``update_customer`` with a capture tool (the gateway first calls
  ``get_customer`` itself, journals, forwards, re-reads); compared with the
  two direct calls it stands for (read + update).
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from run import ADMIN_TOKEN, AGENT_KEY, HERE, Proc, write_gateway_config

MODERN = "2026-07-28"
POLICY = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
default: deny
rules:
  - id: lookups
    match: {{tools: [get_customer]}}
    action: allow
    effect: read
  - id: update
    match: {{tools: [update_customer]}}
    action: allow
    capture: {{tool: get_customer, arguments: {{id: "{{arguments.id}}"}}}}
    undo: {{tool: update_customer, arguments: prior_fields}}
"""
SERVER = ("import sys; sys.path.insert(0, 'bench'); from _serve import serve; "
          "from gateway.demo.crm import create_app; from gateway.demo.mcp import DemoApp; "
          "serve(DemoApp(create_app(), stateless=True, json_response=True))")
_ids = itertools.count(1)


def tools_call(client: httpx.Client, url: str, tool: str, arguments: dict[str, Any]) -> float:
    """One self-contained 2026-07-28 tools/call; seconds it took. Fails loudly on an error."""
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call",
            "params": {"name": tool, "arguments": arguments,
                       "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                 "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": tool}
    began = time.perf_counter()
    response = client.post(url, content=json.dumps(body), headers=headers)
    took = time.perf_counter() - began
    answer = response.json()
    if response.status_code != 200 or answer.get("result", {}).get("isError") is not False:
        raise RuntimeError(f"{tool} via {url}: {response.status_code} {response.text[:300]}")
    return took


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p90_ms": ordered[int(len(ordered) * 0.9)] * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000, "n": len(ordered)}


def measure(calls: int, warmup: int, direct_url: str, gateway_url: str) -> dict[str, Any]:
    direct = httpx.Client(timeout=30)
    gateway = httpx.Client(timeout=30, headers={"X-Gateway-Key": AGENT_KEY})
    times: dict[str, list[float]] = {k: [] for k in ("direct read", "gateway read",
                                                     "direct update", "gateway write")}
    try:
        for i in range(warmup + calls):
            keep = i >= warmup
            plan = "pro" if i % 2 else "enterprise"
            samples = {
                "direct read": tools_call(direct, direct_url, "get_customer", {"id": "cus_1"}),
                "gateway read": tools_call(gateway, gateway_url, "get_customer", {"id": "cus_1"}),
                "direct update": tools_call(direct, direct_url, "update_customer",
                                            {"id": "cus_2", "plan": plan}),
                "gateway write": tools_call(gateway, gateway_url, "update_customer",
                                            {"id": "cus_2", "plan": plan}),
            }
            if keep:
                for name, took in samples.items():
                    times[name].append(took)
    finally:
        direct.close()
        gateway.close()
    rows = {name: summary(samples) for name, samples in times.items()}
    read_ratio = rows["gateway read"]["p50_ms"] / rows["direct read"]["p50_ms"]
    write_floor = rows["direct read"]["p50_ms"] + rows["direct update"]["p50_ms"]
    return {"rows": rows, "checks": {
        "added read p50 ms": rows["gateway read"]["p50_ms"] - rows["direct read"]["p50_ms"],
        "read p50 ratio (gateway / direct)": read_ratio,
        "added write p50 ms (gateway write - direct read - direct update)":
            rows["gateway write"]["p50_ms"] - write_floor,
        "write p50 ratio (gateway / (direct read + direct update))":
            rows["gateway write"]["p50_ms"] / write_floor}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mcp-latest.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-mcp-bench-"))
    logdir = HERE / "results" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    gateway_bin = shutil.which("gateway") or str(Path(sys.executable).parent / "gateway")
    procs: list[Proc] = []
    try:
        server = Proc("mcp-server", [sys.executable, "-c", SERVER], r"ready port=(\d+)", logdir)
        procs.append(server)
        url = f"http://127.0.0.1:{server.match.group(1)}"
        config, policies, db_url = write_gateway_config(tmp, url)
        (policies / "bench.yaml").write_text(POLICY.format(url=url))
        gw = Proc("gateway", [gateway_bin, "serve", "--config", str(config), "--policies",
                              str(policies), "--port", "0", "--admin-port", "0",
                              "--database-url", db_url],
                  r"gateway ready proxy=(\S+) admin=(\S+)", logdir, timeout=60)
        procs.append(gw)
        result = measure(args.calls, args.warmup, f"{url}/mcp", f"{gw.match.group(1)}/tools")
        journal = httpx.get(f"{gw.match.group(2)}/v1/journal", params={"limit": 5},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["items"]
        if not journal or journal[0]["method"] != "tools/call":
            raise RuntimeError("the gateway journaled no tool call during the write runs")
    finally:
        for proc in reversed(procs):
            proc.stop()
    print(f"{'target':<16}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'n':>7}")
    for name, row in result["rows"].items():
        print(f"{name:<16}{row['p50_ms']:>9.3f}{row['p90_ms']:>9.3f}{row['p99_ms']:>9.3f}"
              f"{row['n']:>7}")
    for name, value in result["checks"].items():
        print(f"{name}: {value:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
