"""Soak: two gateway processes on one PostgreSQL, with faults, then the invariants.

    .venv/bin/python bench/soak.py                  # about 3 minutes
    .venv/bin/python bench/soak.py --duration 60    # shorter

Everything is on 127.0.0.1. It starts a PostgreSQL 15 cluster of its own
(``initdb`` in a temporary directory, as the ``postgres`` user when run as root;
the shared server is never touched), a fault-injecting upstream with seeded
resources (``tests/faults/procs_upstream.py``) and two ``gateway serve``
processes on the cluster. Agent threads PATCH the seeded items through either
gateway while a fault thread, in turn: restarts the database, SIGKILLs a
gateway and starts it again, engages the kill switch (and releases it), makes
the upstream slow for a while. Held calls are approved through either gateway.

At the end (faults stopped, both gateways up, recovery given its lease) it
checks and prints:

1. every agent write the upstream received is journaled, with its prior state;
2. none reached the upstream between an engage's return and its release;
3. every held call reached the upstream at most once (exactly once if executed);
4. no entry is left ``intent``, every agent write has an audit record naming it,
   and ``/v1/audit/verify`` says ok;
5. a rollback of the run restores every seeded item whose writes all landed or
   all failed (items with an ``unknown`` write are counted apart: reconciling
   them is rollback's ``unknown`` rule).

Exit status 0 when all hold.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.faults.procs_support import (  # noqa: E402
    Cluster,
    Gateway,
    configure,
    query,
)
from tests.faults.procs_upstream import FaultUpstream  # noqa: E402

ITEMS = 20
HELD = 8
RUN = "soak"


class Soak:
    def __init__(self, duration: float, threads: int) -> None:
        self.duration = duration
        self.threads = threads
        self.upstream = FaultUpstream({f"/items/{i}": {"name": f"item {i}", "v": 0}
                                       for i in range(ITEMS)}
                                      | {f"/held/{i}": {"v": 0} for i in range(HELD)})
        self.seed = {path: dict(value) for path, value in self.upstream.resources.items()}
        self.cluster = Cluster()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-soak-"))
        self.config = configure(self.dir, self.cluster.url, self.upstream.url,
                                executor_lease=2, upstream_timeout=5, capture_timeout=5)
        self.gateways: list[Gateway] = [Gateway(self.config), Gateway(self.config)]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.engaged: list[tuple[float, float]] = []  # (engage returned, release asked)
        self.counts: dict[str, int] = {"writes": 0, "write_errors": 0, "db_restarts": 0,
                                       "kills": 0, "engages": 0, "slow_periods": 0,
                                       "held": 0, "approved": 0}
        self.held: dict[str, str] = {}  # approval id -> path
        self.executed: set[str] = set()

    def gateway(self) -> Gateway:
        with self.lock:
            return random.choice(self.gateways)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    # load --------------------------------------------------------------------

    def agent(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            path = f"/items/{rng.randrange(ITEMS)}"
            body = {"v": rng.randrange(1, 1000), "op": uuid.uuid4().hex}
            try:
                answer = self.gateway().call("PATCH", path, json=body,
                                             headers={"X-Agent-Run": RUN}, timeout=15)
                self.count("writes" if answer.status_code == 200 else "write_errors")
            except httpx.HTTPError:
                self.count("write_errors")

    def holds(self) -> None:
        for i in range(HELD):
            if self.stop.wait(self.duration / (HELD + 2)):
                return
            try:
                answer = self.gateway().call("PATCH", f"/held/{i}", json={"v": i + 1},
                                             headers={"Prefer": "wait=0"}, timeout=15)
            except httpx.HTTPError:
                continue
            if answer.status_code == 202:
                self.held[answer.json()["approval"]["id"]] = f"/held/{i}"
                self.count("held")
        for call_id in list(self.held):  # approve each, through either gateway, until decided
            for _ in range(20):
                try:
                    answer = self.gateway().api("POST", f"/v1/approvals/{call_id}/approve",
                                                "approver", json={}, timeout=30)
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    self.executed.add(call_id)
                    self.count("approved")
                    break
                if answer.status_code == 409 and "already_decided" in answer.text:
                    break
                time.sleep(0.5)

    # faults --------------------------------------------------------------------

    def faults(self) -> None:
        kinds = ["db", "kill", "engage", "slow"]
        turn = 0
        while not self.stop.wait(self.duration / 14):
            kind = kinds[turn % len(kinds)]
            turn += 1
            if kind == "db":
                self.cluster.stop("immediate" if turn % 2 else "fast")
                time.sleep(1.5)
                self.cluster.start()
                self.count("db_restarts")
            elif kind == "kill":
                with self.lock:
                    index = random.randrange(len(self.gateways))
                    victim = self.gateways[index]
                victim.kill()
                self.count("kills")
                replacement = Gateway(self.config)
                with self.lock:
                    self.gateways[index] = replacement
            elif kind == "engage":
                self.engage()
            else:
                self.upstream.delay = 1.0
                self.count("slow_periods")
                self.stop.wait(3)
                self.upstream.delay = 0.0

    def engage(self) -> None:
        gateway = self.gateway()
        try:
            answer = gateway.api("POST", "/v1/killswitch/engage", "approver",
                                 json={"reason": "soak"}, timeout=30)
        except httpx.HTTPError:
            return
        if answer.status_code != 200:
            return
        returned = time.time()
        self.count("engages")
        self.stop.wait(2)
        asked = time.time()
        for _ in range(30):
            try:
                released = gateway.api("POST", "/v1/killswitch/release", "admin",
                                       json={"reason": "soak"}, timeout=30)
                if released.status_code in (200, 404, 409):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.engaged.append((returned, asked))

    # the run and the checks -------------------------------------------------------

    def run(self) -> int:
        workers = [threading.Thread(target=self.agent, args=(n,)) for n in range(self.threads)]
        workers += [threading.Thread(target=self.faults), threading.Thread(target=self.holds)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        self.stop.wait(self.duration)
        self.stop.set()
        for worker in workers:
            worker.join(120)
        self.upstream.delay = 0.0
        print(f"ran {time.monotonic() - started:.0f} s: " + ", ".join(
            f"{k} {v}" for k, v in self.counts.items()))
        return self.check()

    def settle(self) -> None:
        """Recovery has marked the dead processes' intents (their leases lapse in 2 s)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = query(self.cluster.url, "SELECT count(*) FROM journal WHERE state = 'intent'")
            if left[0][0] == 0:
                return
            time.sleep(0.5)

    def check(self) -> int:
        gateway = self.gateways[0]
        self.settle()
        rows = query(self.cluster.url, "SELECT id, path, request_body, prior, state "
                     "FROM journal WHERE decision <> 'rollback'")
        by_op = {}
        for entry_id, path, body, prior, state in rows:
            op = (json.loads(body) if body else {}).get("op")
            if op:
                by_op[op] = (entry_id, path, prior, state)
        results: list[tuple[str, bool, str]] = []

        sent = [(b, t) for (m, p, b), t in zip(self.upstream.log, self.upstream.stamps)
                if m == "PATCH" and p.startswith("/items/") and b and "op" in b]
        unjournaled = [b["op"] for b, _ in sent if b["op"] not in by_op]
        no_prior = [b["op"] for b, _ in sent if b["op"] in by_op and by_op[b["op"]][2] is None]
        results.append(("every write that reached the upstream is journaled with its prior",
                        not unjournaled and not no_prior,
                        f"{len(sent)} writes received; {len(unjournaled)} unjournaled, "
                        f"{len(no_prior)} without prior"))

        after = [t for _, t in sent for returned, asked in self.engaged if returned <= t < asked]
        results.append(("none reached the upstream after an engage returned", not after,
                        f"{len(self.engaged)} engages; {len(after)} writes inside a freeze"))

        held_sent = {path: sum(1 for m, p, _ in self.upstream.log if m == "PATCH" and p == path)
                     for path in self.held.values()}
        twice = [p for p, n in held_sent.items() if n > 1]
        missing = [self.held[c] for c in self.executed if held_sent[self.held[c]] != 1]
        results.append(("held calls reached the upstream at most once (executed: once)",
                        not twice and not missing,
                        f"{len(self.held)} held, {len(self.executed)} executed; "
                        f"{len(twice)} sent twice, {len(missing)} executed but not sent once"))

        states = query(self.cluster.url, "SELECT state, count(*) FROM journal GROUP BY state")
        audit = query(self.cluster.url, "SELECT detail FROM audit")
        named = set()
        for (detail,) in audit:
            value = json.loads(detail)
            for key in ("journal", "journal_id"):
                if isinstance(value.get(key), str):
                    named.add(value[key])
        agent_ids = [entry_id for entry_id, *_ in rows]
        unaudited = [i for i in agent_ids if i not in named]
        verified = gateway.api("GET", "/v1/audit/verify", "viewer").json()
        intents = dict(states).get("intent", 0)
        results.append(("audit complete and verified; no entry left intent",
                        verified.get("ok") is True and not unaudited and intents == 0,
                        f"states {dict(states)}; {len(unaudited)} of {len(agent_ids)} entries "
                        f"without an audit record; verify {verified}"))

        results.append(self.rollback(gateway, rows))
        width = max(len(name) for name, _, _ in results)
        for name, ok, detail in results:
            print(f"{'ok  ' if ok else 'FAIL'} {name:<{width}}  {detail}")
        return 0 if all(ok for _, ok, _ in results) else 1

    def rollback(self, gateway: Gateway, rows: list[tuple[Any, ...]]) -> tuple[str, bool, str]:
        answer = gateway.api("POST", "/v1/rollback", json={"run": RUN, "dry_run": False},
                             timeout=300)
        plan = answer.json().get("plan", {}) if answer.status_code == 200 else {}
        by_path: dict[str, set[str]] = {}
        for _, path, _, _, state in rows:
            if path.startswith("/items/"):
                by_path.setdefault(path, set()).add(state)
        judged = [p for p, s in by_path.items() if "unknown" not in s and "intent" not in s]
        wrong = [p for p in judged if self.upstream.resources.get(p) != self.seed[p]]
        unknown = len(by_path) - len(judged)
        return ("rollback restores every item whose writes all landed or all failed",
                answer.status_code == 200 and not wrong,
                f"plan {plan.get('status')}: {len(judged) - len(wrong)} of {len(judged)} "
                f"restored; {unknown} items with an unknown write left to reconciliation")

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        self.upstream.close()
        self.cluster.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of load and faults")
    parser.add_argument("--threads", type=int, default=4, help="agent threads")
    args = parser.parse_args()
    soak = Soak(args.duration, args.threads)
    try:
        return soak.run()
    finally:
        soak.close()


if __name__ == "__main__":
    sys.exit(main())
