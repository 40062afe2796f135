"""Drive the compose stack end to end, through its one address (HAProxy).

Run by ``.ci/container-check`` once ``docker-compose.yml`` is up; standard
library only, so it runs on the host's python3 without the project installed.
Each step prints its time; the first failed expectation exits 1 with what was
seen. HAProxy names the replica that answered in ``X-Served-By``, which is how
the check knows that a freeze engaged through one replica is obeyed by the
other, and that both write to one journal.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

REPLICAS = {"gateway-1", "gateway-2"}


class CheckFailed(Exception):
    pass


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def replica(self) -> str:
        return str(self.headers.get("X-Served-By", "?"))

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.status} from {self.replica}: {self.body[:300].decode('utf-8', 'replace')}"


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.headers, exc.read())


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def until(what: str | Callable[[], str], attempt: Callable[[], bool], seconds: float,
          interval: float = 0.5) -> None:
    """Retry ``attempt`` until it returns true (polling a condition, with a deadline).

    ``what`` names the condition, or is called to describe it when time is up.
    """
    deadline = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if attempt():
                return
        except (OSError, urllib.error.URLError) as exc:  # not listening yet
            last = exc
        time.sleep(interval)
    what = what if isinstance(what, str) else what()
    raise CheckFailed(f"{what}: not within {seconds:.0f}s" + (f" (last error: {last})" if last else ""))


def across_replicas(what: str, send: Callable[[], Reply], check: Callable[[Reply], None],
                    seconds: float = 20) -> list[Reply]:
    """Send until both replicas have answered; every answer must pass ``check``.

    HAProxy takes a replica out of rotation for a health-check interval (2 s)
    when a check fails while it starts, so the calls go on for ``seconds``,
    pausing a little while the same replica keeps answering.
    """
    seen: list[Reply] = []
    deadline = time.monotonic() + seconds
    while True:
        reply = send()
        check(reply)
        seen.append(reply)
        answered = {r.replica for r in seen}
        if answered >= REPLICAS:
            return seen
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: only {sorted(answered)} answered in {len(seen)} calls "
                              f"over {seconds:.0f}s")
        if len(seen) >= 4:
            time.sleep(0.25)


def crm_state(crm: str) -> dict[str, Any]:
    """Every customer and deal, without the server-stamped ``updated_at``."""
    state = {}
    for collection in ("customers", "deals"):
        reply = call("GET", f"{crm}/{collection}")
        expect(reply.status == 200, f"the demo CRM's /{collection}: {reply}")
        items = reply.json()["items"]
        state[collection] = {i["id"]: {k: v for k, v in i.items() if k != "updated_at"} for i in items}
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proxy", required=True, help="the load balancer's agent address")
    parser.add_argument("--admin", required=True, help="the load balancer's operator address")
    parser.add_argument("--crm", required=True, help="the demo CRM, directly")
    parser.add_argument("--key", required=True, help="an agent key of the settings")
    parser.add_argument("--token", required=True, help="an admin operator token of the settings")
    parser.add_argument("--wait", type=float, default=90, help="seconds for the stack to come up")
    args = parser.parse_args()
    run = f"container-check-{uuid.uuid4().hex[:8]}"
    agent = {"X-Gateway-Key": args.key, "X-Agent-Run": run}
    operator = {"Authorization": f"Bearer {args.token}"}
    start = time.monotonic()

    def step(text: str) -> None:
        print(f"   [{time.monotonic() - start:5.1f}s] {text}", flush=True)

    def admin(method: str, path: str, body: Any = None) -> Reply:
        return call(method, args.admin + path, body, operator)

    # 1. Up: the CRM, and both replicas in rotation behind the load balancer for
    # operators and for agents (a replica restarts once if it started before
    # PostgreSQL took connections; HAProxy checks each backend on its own).
    until("the demo CRM", lambda: call("GET", f"{args.crm}/_demo/health").status == 200, args.wait)
    healthy: set[str] = set()
    serving: set[str] = set()
    recent: list[str] = []

    def both_up() -> bool:
        health = call("GET", f"{args.admin}/v1/health")
        if health.status == 200 and health.json().get("store") is True:
            healthy.add(health.replica)
        read = call("GET", f"{args.proxy}/crm/customers", headers=agent)
        recent.append(read.replica if read.status == 200 else "")
        del recent[:-4]  # a replica HAProxy has since marked down drops out of this window
        serving.clear()
        serving.update(r for r in recent if r)
        return healthy >= REPLICAS and serving >= REPLICAS

    until(lambda: f"both replicas up behind the load balancer (admin: {sorted(healthy)}, "
          f"proxy: {sorted(serving)})", both_up, args.wait, interval=0.25)
    step("both replicas in rotation behind the load balancer, store reachable")

    # 2. An agent call through the one address, answered by each replica.
    def read_ok(reply: Reply) -> None:
        expect(reply.status == 200 and reply.headers.get("X-Gateway-Decision") == "allow",
               f"agent read through the load balancer: {reply}")

    across_replicas("agent reads", lambda: call("GET", f"{args.proxy}/crm/customers", headers=agent), read_ok)
    unauthenticated = call("GET", f"{args.proxy}/crm/customers")
    expect(unauthenticated.status == 401, f"a call without a key: {unauthenticated}")
    step("agent -> lb -> gateway-1 and gateway-2 -> demo CRM: 200; without a key: 401")

    # 3. Agent writes through both replicas, journaled in the one store.
    before = crm_state(args.crm)
    writes: list[Reply] = []
    plans = itertools.cycle(["enterprise", "pro-plus", "team", "starter", "growth", "scale"])

    def write() -> Reply:
        target = ("cus_1", "cus_2")[len(writes) % 2]
        reply = call("PATCH", f"{args.proxy}/crm/customers/{target}", {"plan": next(plans)}, agent)
        writes.append(reply)
        return reply

    def write_ok(reply: Reply) -> None:
        expect(reply.status == 200 and reply.headers.get("X-Gateway-Decision") == "allow",
               f"agent write through the load balancer: {reply}")

    across_replicas("agent writes", write, write_ok)
    created = call("POST", f"{args.proxy}/crm/customers",
                   {"name": "Container Check Ltd", "plan": "pro"}, agent)
    expect(created.status == 201, f"agent create through the load balancer: {created}")
    writes.append(created)
    after_writes = crm_state(args.crm)
    expect(after_writes != before, "the agent's writes did not change the CRM")
    journal = admin("GET", f"/v1/journal?run={run}&limit=100")
    expect(journal.status == 200 and len(journal.json()["items"]) == len(writes),
           f"journal of run {run}: {len(writes)} writes expected, got {journal}")
    step(f"{len(writes)} agent writes through both replicas; all {len(writes)} in the one journal")

    # 4. A freeze engaged through one replica stops writes through the other.
    engaged = admin("POST", "/v1/killswitch/engage", {"reason": "container check"})
    expect(engaged.status == 200, f"engage: {engaged}")
    frozen_by = engaged.replica
    expect(frozen_by in REPLICAS, f"engage answered by {frozen_by!r}, not a replica")

    def refused(reply: Reply) -> None:
        error = (reply.json() or {}).get("error", {})
        expect(reply.status == 423 and error.get("code") == "writes_frozen",
               f"a write after engage (through {frozen_by}) was not refused: {reply}")

    attempts = across_replicas("writes while frozen", lambda: call(
        "PATCH", f"{args.proxy}/crm/customers/cus_1", {"plan": "free"}, agent), refused)
    expect(crm_state(args.crm) == after_writes, "a write reached the CRM while frozen")
    other = sorted(REPLICAS - {frozen_by})[0]

    def status_engaged(reply: Reply) -> None:
        expect(reply.status == 200 and reply.json()["engaged"] is True, f"kill switch status: {reply}")

    across_replicas("kill switch status", lambda: admin("GET", "/v1/killswitch"), status_engaged)
    across_replicas("reads while frozen", lambda: call("GET", f"{args.proxy}/crm/customers/cus_1",
                                                        headers=agent), read_ok)
    step(f"engaged through {frozen_by}: {len(attempts)} writes refused 423 (through {other} too), "
         "CRM untouched, reads go on, both report engaged")

    # 5. Rollback through the admin API (while frozen: recovery is operators' work)
    # restores the CRM as it was before the agent's writes.
    rollback = admin("POST", "/v1/rollback", {"run": run, "dry_run": False})
    expect(rollback.status == 200, f"rollback: {rollback}")
    plan = rollback.json()["plan"]
    states = [s["status"] for s in plan["steps"]]
    expect(len(states) == len(writes) and set(states) == {"applied"} and not plan["conflicts"],
           f"rollback plan: {json.dumps(plan)[:800]}")
    restored = crm_state(args.crm)
    expect(restored == before, f"after rollback the CRM differs from before the agent's writes:\n"
                               f"  before:   {json.dumps(before, sort_keys=True)}\n"
                               f"  restored: {json.dumps(restored, sort_keys=True)}")
    step(f"rollback through {rollback.replica}: {len(states)} steps applied, "
         "CRM equals its state before the agent's writes")

    # 6. Release through one replica; writes pass through both again.
    released = admin("POST", "/v1/killswitch/release", {"reason": "container check done"})
    expect(released.status == 200, f"release: {released}")
    across_replicas("writes after release", lambda: call(
        "PATCH", f"{args.proxy}/crm/customers/cus_3", {"plan": "pro"}, agent), write_ok)
    verify = admin("GET", "/v1/audit/verify")
    expect(verify.status == 200 and verify.json()["ok"] is True, f"audit chain: {verify}")
    step(f"released through {released.replica}: writes pass through both; "
         f"audit chain of both replicas verifies ({verify.json()['count']} records)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as exc:
        print(f"!! {exc}", file=sys.stderr)
        sys.exit(1)
