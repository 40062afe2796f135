"""``gateway drill``: rehearse an incident end to end, in one process, on real sockets.

A scratch upstream (the bundled demo CRM, or a sandbox API with the same
``/customers`` CRUD shape), a gateway in front of it with a temporary policy
and store, and a scripted agent that misbehaves: it sets every plan to
``free``, renames customers, creates junk ones and deletes others until the
gateway stops it, by a ``writes`` tripwire or by an operator engaging the
kill switch. The agent's run is then rolled back, the freeze released, and
the upstream's final state compared with its initial one (``updated_at``
ignored). It measures detect (first bad write -> freeze engaged), stop
(freeze engaged -> the first 423 the agent sees) and restore (rollback start
-> finish), and passes only when the state is back and no journaled write
was lost. ``gateway.drill.report`` renders and saves the report.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.app import Gateway
from gateway.core.model import JournalQuery, iso, utcnow
from gateway.core.rollback import StepStatus
from gateway.drill.findings import (
    AGENT,
    OPERATOR,
    TRIPWIRE,
    UPSTREAM,
    VOLATILE,
    AgentLog,
    DrillOptions,
    Findings,
)
from gateway.drill.report import build, changes_lost, differences, save, summary
from gateway.errors import DrillError, OperatorError
from gateway.operator.client import AdminClient, admin_url, token
from gateway.services.rollbacks import PAGE, Selection
from gateway.settings import AgentSpec, OperatorSpec, Settings, dev_operator_token, sha256_hex

RETRIES_AFTER_STOP = 3  # a runaway agent keeps trying: every retry must be refused too

Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DrillContext:
    """What a ``before_rollback`` hook gets: the upstream, reached directly."""

    base_url: str
    upstream: httpx.AsyncClient
    changed: list[str]  # initial customers the agent edited and left in place


Hook = Callable[[DrillContext], Awaitable[None]]


def _print(line: str) -> None:
    print(line, flush=True)


def policy_yaml(base_url: str, tripwire_limit: int | None) -> str:
    tripwire = ("" if tripwire_limit is None else
                f"tripwires:\n  - {{id: {TRIPWIRE}, kind: writes, limit: {tripwire_limit}, "
                "window: 60, per: agent, action: freeze}\n")
    return (f"version: 1\nupstream: {UPSTREAM}\nbase_url: {base_url}\ndefault: deny\n"
            f"volatile: [{', '.join(VOLATILE)}]\n{tripwire}rules:\n"
            '  - {id: read, match: {methods: [GET, HEAD], path: "/**"}, action: allow}\n'
            '  - {id: edit-customer, match: {methods: [PATCH, PUT], path: "/customers/{id}"}, '
            "action: allow}\n"
            '  - {id: create-customer, match: {methods: [POST], path: "/customers"}, '
            "action: allow}\n"
            '  - {id: delete-customer, match: {methods: [DELETE], path: "/customers/{id}"}, '
            "action: allow}\n")


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1:0 in this loop; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))  # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY, and
    sock.listen(128)             # responses sent in two writes do not wait ~40 ms (Nagle)
    sock.setblocking(False)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=False,
                                           log_level="warning", loop="none",
                                           server_header=False, date_header=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):  # up to 10 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise DrillError("a listener did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()


async def read_customers(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """``GET /customers`` at the upstream: a list, or ``{"items"|"data": [...]}``, by id."""
    try:
        response = await client.get("/customers")
    except httpx.HTTPError as exc:
        raise DrillError(f"cannot read {client.base_url}customers: {exc!r}") from None
    body = response.json() if response.status_code == 200 else None
    items = body.get("items", body.get("data")) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
        raise DrillError(f"GET {client.base_url}customers answered {response.status_code}, "
                         "not a list of customers with ids")
    return {str(item["id"]): item for item in items}


class MisbehavingAgent:
    """Bulk writes on customers, round robin: PATCH, PUT, POST, PATCH, DELETE."""

    PATTERN = ("PATCH", "PUT", "POST", "PATCH", "DELETE")

    def __init__(self, client: httpx.AsyncClient, initial: dict[str, dict[str, Any]],
                 writes: int, echo: Echo) -> None:
        self.client, self.writes, self.echo = client, writes, echo
        self.known = {cid: dict(item) for cid, item in initial.items()}
        self.originals = list(initial)
        self.junk: list[str] = []
        self.cursor = 0
        self.log = AgentLog()

    def _call(self, index: int) -> tuple[str, str, dict[str, Any] | None]:
        method = self.PATTERN[index % len(self.PATTERN)]
        live = self.originals + self.junk
        if method == "DELETE" and live:
            # alternately a junk customer and a real one, sparing the first real one
            pool = self.junk if (index // 5) % 2 == 0 else self.originals[1:]
            target = (pool or self.junk or live)[-1]
            return "DELETE", f"/customers/{target}", None
        if method in ("PATCH", "PUT") and live:
            cid = live[self.cursor % len(live)]
            self.cursor += 1
            if method == "PATCH":
                return "PATCH", f"/customers/{cid}", {"plan": "free"}
            body = {k: v for k, v in self.known[cid].items() if k != "id" and k not in VOLATILE}
            name = str(body.get("name", cid))
            return "PUT", f"/customers/{cid}", {**body, "name": f"{name} (renamed)", "plan": "free"}
        return "POST", "/customers", {"name": f"Drill junk {index}", "plan": "free",
                                      "email": f"junk{index}@drill.invalid"}

    async def run(self) -> AgentLog:
        log, index = self.log, 0
        while log.sent - log.stopped < self.writes and log.stopped <= RETRIES_AFTER_STOP:
            method, path, body = self._call(index)
            index += 1
            at = time.time()
            log.first_write = log.first_write or at
            try:
                response = await self.client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                log.error = f"{method} {path}: {exc!r}"
                return log
            log.sent += 1
            if response.status_code == 423:
                log.stopped += 1
                if log.first_423 is None:
                    log.first_423, log.stopped_by = time.time(), response.json().get("error")
                continue
            log.leaked += bool(log.stopped)  # it got past the freeze
            if 200 <= response.status_code < 300:
                log.succeeded += 1
                self._learn(method, path, response)
            else:
                log.other += 1
            if log.sent % 10 == 0:
                self.echo(f"drill:   agent: {log.sent} writes sent, {log.succeeded} went through")
        return log

    def _learn(self, method: str, path: str, response: httpx.Response) -> None:
        value = response.json() if response.content else None
        if method == "POST":
            cid = str(value.get("id")) if isinstance(value, dict) and value.get("id") else \
                response.headers.get("location", "").rstrip("/").rsplit("/", 1)[-1]
            if cid:
                self.junk.append(cid)
                self.known[cid] = value if isinstance(value, dict) else {}
            return
        cid = path.rsplit("/", 1)[-1]
        self.log.edited[cid] = method
        if method == "DELETE":
            self.originals = [c for c in self.originals if c != cid]
            self.junk = [c for c in self.junk if c != cid]
        elif isinstance(value, dict):
            self.known[cid] = value


class Timeline:
    """The drill's steps, each with its time since the start, echoed as progress."""

    def __init__(self, echo: Echo) -> None:
        self.echo, self.start = echo, time.perf_counter()
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, detail: str) -> None:
        ms = round((time.perf_counter() - self.start) * 1000, 1)
        self.steps.append({"n": len(self.steps) + 1, "step": name, "at": iso(utcnow()),
                           "elapsed_ms": ms, "detail": detail})
        self.echo(f"drill: [{ms:>8.1f} ms] {name}: {detail}")


def _settings(tmp: Path, options: DrillOptions, agent_key: str) -> tuple[Settings, str]:
    token, _ = dev_operator_token()
    return Settings(
        database_url=options.database_url or f"sqlite+aiosqlite:///{tmp}/drill.db",
        policies_dir=tmp / "policies", allow_anonymous_agents=False, tripwires=[],
        agents=[AgentSpec(name=AGENT, key_sha256=sha256_hex(agent_key))],
        operators=[OperatorSpec(name=OPERATOR, role="admin", token_sha256=sha256_hex(token))],
        upstream_timeout=10, capture_timeout=10, approval_webhook=None), token


async def _operator(admin: httpx.AsyncClient, run: str, threshold: int,
                    agent: asyncio.Task[AgentLog], timeline: Timeline) -> None:
    """Simulated detection: watch the journal, engage the kill switch at ``threshold`` writes."""
    while not agent.done():
        items = (await admin.get("/v1/journal", params={"run": run, "limit": 1000})).json()["items"]
        if len(items) >= threshold:
            timeline.step("operator detects", f"{len(items)} journal entries by {AGENT} "
                          "in /v1/journal: engaging the kill switch")
            response = await admin.post("/v1/killswitch/engage", json={
                "reason": f"drill: {AGENT} is bulk-editing customers", "agent": AGENT})
            if response.status_code != 200:
                raise DrillError(f"engaging the kill switch answered {response.status_code}")
            return
        await asyncio.sleep(0.005)


async def run_drill(options: DrillOptions, *, before_rollback: Hook | None = None,
                    echo: Echo = _print) -> Findings:
    """Run the drill; ``gateway.drill.report`` judges, saves and prints what it found."""
    started_at, timeline = utcnow(), Timeline(echo)
    run = f"drill-{started_at:%Y%m%dT%H%M%S}-{sha256_hex(str(time.time_ns()))[:6]}"
    limit = max(1, options.writes // 5) if options.stop == "tripwire" else None
    with tempfile.TemporaryDirectory(prefix="gateway-drill-") as tmp_name:
        tmp = Path(tmp_name)
        async with AsyncExitStack() as stack:
            if options.base_url:
                base_url = options.base_url.rstrip("/")
                timeline.step("scratch upstream", f"sandbox API at {base_url}")
            else:
                from gateway.demo.crm import create_app
                base_url = await stack.enter_async_context(serving(create_app()))
                timeline.step("scratch upstream", f"bundled demo CRM on {base_url}")
            direct = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url,
                                                                       timeout=10))
            initial = await read_customers(direct)  # first: an unreachable sandbox fails fast
            timeline.step("snapshot", f"{len(initial)} customers at the upstream")
            (tmp / "policies").mkdir()
            (tmp / "policies" / "drill.yaml").write_text(policy_yaml(base_url, limit))
            agent_key = dev_operator_token()[0]
            settings, token = _settings(tmp, options, agent_key)
            gateway = Gateway(settings)
            await gateway.start()
            stack.push_async_callback(gateway.stop)
            proxy_url = await stack.enter_async_context(serving(gateway.proxy_app()))
            admin = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(gateway.admin_app()), base_url="http://admin",
                headers={"Authorization": f"Bearer {token}"}))
            timeline.step("gateway", f"proxy on {proxy_url}, store "
                          f"{'given' if options.database_url else 'temporary SQLite'}, stop by "
                          + (f"tripwire {TRIPWIRE} ({limit} writes/60s per agent -> freeze)"
                             if limit else "an operator watching the journal"))

            client = await stack.enter_async_context(httpx.AsyncClient(
                base_url=f"{proxy_url}/{UPSTREAM}", timeout=30, headers={
                    "X-Gateway-Key": agent_key, "X-Agent-Run": run,
                    "X-Agent-Model": "drill-script", "X-Agent-Prompt-Version": "drill-1"}))
            agent = MisbehavingAgent(client, initial, options.writes, echo)
            timeline.step("agent", f"{AGENT} (run {run}) starts up to {options.writes} bad writes")
            task = asyncio.create_task(agent.run())
            if options.stop == "operator":
                threshold = max(1, min(10, options.writes // 5))
                try:
                    await _operator(admin, run, threshold, task, timeline)
                finally:
                    log = await task
            else:
                log = await task
            state = (await admin.get("/v1/killswitch")).json()
            freeze = next((f for f in state["freezes"]  # ours only, on a shared store too
                           if f["scope"] == "agent" and f["target"] == AGENT), None)
            timeline.step("stop", f"{log.sent} writes sent, {log.succeeded} went through, "
                          f"{log.stopped} answered 423" + (f" ({log.stopped_by['message']})"
                                                           if log.stopped_by else "")
                          + (f"; agent error {log.error}" if log.error else ""))

            if before_rollback is not None:
                changed = [c for c, m in log.edited.items() if c in initial and m != "DELETE"]
                await before_rollback(DrillContext(base_url, direct, changed))
            began = time.perf_counter()
            plan = await gateway.rollbacks.start(Selection(run=run), OPERATOR, dry_run=False,
                                                 force=False)
            restore_ms = (time.perf_counter() - began) * 1000
            counts = {s.value: sum(1 for x in plan.steps if x.status is s) for s in StepStatus}
            timeline.step("restore", f"rollback {plan.status.value}: {counts['applied']} applied, "
                          f"{counts['conflict']} conflicts, {counts['failed']} failed, "
                          f"{len(plan.irreversible)} irreversible")
            if freeze is not None:
                released = await admin.post("/v1/killswitch/release", json={
                    "reason": "drill: restored", "agent": AGENT})
                timeline.step("release", f"freeze by {freeze['by']} released "
                              f"({released.status_code})")

            final = await read_customers(direct)
            entries = await gateway.store.list_journal(JournalQuery(run=run, limit=PAGE))
            await gateway.audit.flush()
            audit = (await admin.get("/v1/audit/verify")).json()
            lost = changes_lost(plan)
            timeline.step("verify", f"final state equals initial: "
                          f"{'no' if differences(initial, final, VOLATILE) else 'yes'}; "
                          f"changes lost: {lost}; audit chain ok: {audit.get('ok')}")

    return Findings(options, started_at, run, limit, base_url, proxy_url, initial, final, log,
                    freeze, plan, restore_ms, len(entries), audit, timeline.steps,
                    (time.perf_counter() - timeline.start) * 1000)


def main(options: DrillOptions, before_rollback: Hook | None = None,
         echo: Echo = _print) -> int:
    """``gateway drill``: run, print the summary, save the reports; 0 on PASS, 1 on FAIL."""
    return asyncio.run(amain(options, before_rollback, echo))


async def amain(options: DrillOptions, before_rollback: Hook | None = None,
                echo: Echo = _print) -> int:
    if options.record:  # before the drill: a missing token should not cost a run
        try:
            admin_url(argparse.Namespace(admin_url=options.admin_url)), token()
        except OperatorError as exc:
            echo(exc.message)
            return 2
    try:
        findings = await run_drill(options, before_rollback=before_rollback, echo=echo)
    except DrillError as exc:
        echo(f"gateway drill: cannot run: {exc}")
        return 2
    report = build(findings)
    paths = save(report, options.out)
    echo(summary(report, paths))
    if options.record:
        try:
            echo(await asyncio.to_thread(record, report, options.admin_url))
        except OperatorError as exc:
            echo(f"gateway drill: the report was saved but not recorded: {exc.message}")
            return 2
    return 0 if report["verdict"] == "PASS" else 1


def record(report: dict[str, Any], url: str | None) -> str:
    """Post the report to a running gateway (``POST /v1/drills``, operator token from
    ``GATEWAY_TOKEN``): its audit log keeps the verdict and the detect / stop / restore
    times, which the autonomy report shows as the last drill."""
    base = admin_url(argparse.Namespace(admin_url=url))
    client = AdminClient(base, token())
    try:
        data = client.call("POST", "/v1/drills", body=report)
    finally:
        client.close()
    return (f"drill: recorded at {base} (audit record #{data['audit']['seq']}): the autonomy "
            "report shows it as the last drill")
