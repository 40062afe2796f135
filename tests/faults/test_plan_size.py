"""Issue 16, item 9: a rollback plan covers every entry asked for, however many, paging
through the journal, and shows its progress. Before: ``MAX_ENTRIES`` cut it at 10,000
silently (older writes appeared nowhere), and a plan had no progress to show."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta

import httpx

from gateway.core.model import (
    Checkpoint,
    JournalEntry,
    JournalOutcome,
    JournalState,
    new_id,
    utcnow,
)
from gateway.store.sql import SqlStore
from tests.faults.conftest import Gateway
from tests.faults.upstream import HANG, FaultyUpstream
from tests.harness import poll

COUNT = 10_050  # over the old cap, with many entries sharing one timestamp


async def _seed(url: str) -> None:
    store = SqlStore(url)
    await store.start()
    try:
        start = utcnow() - timedelta(hours=1)
        entries = [JournalEntry(
            id=new_id(), at=start + timedelta(seconds=i // 100), request_id=new_id(),
            agent="bot", checkpoint=Checkpoint(run="big"), upstream="crm", method="POST",
            path="/customers", query="", rule="create", decision="allow", policy_revision="r",
            request_headers={}, request_body=None, request_body_sha256=None,
            request_body_size=0, request_content_type=None, prior=None, prior_status=None,
            capture_path=None, undo=None, reversible=False) for i in range(COUNT)]
        for chunk in range(0, COUNT, 500):  # concurrent intents share a transaction
            part = entries[chunk:chunk + 500]
            await asyncio.gather(*(store.journal_intent(e) for e in part))
            await asyncio.gather(*(store.journal_outcome(e.id, JournalOutcome(
                JournalState.FAILED, None, {}, None, None, 0, None, False, "refused: seeded",
                {}, utcnow())) for e in part))
    finally:
        await store.close()


def test_a_plan_covers_every_entry_asked_for(store_url: str,
                                             launch: Callable[..., Gateway]) -> None:
    asyncio.run(_seed(store_url))
    gateway = launch()
    plan = gateway.rollback(run="big", dry_run=True)
    covered = {item["entry"] for item in plan["skipped"]} | {s["entry"] for s in plan["steps"]} \
        | {item["entry"] for item in plan["irreversible"]}
    assert len(covered) == COUNT
    assert plan["progress"] == {"steps": 0, "done": 0}


def test_a_running_plan_shows_its_progress(upstream: FaultyUpstream,
                                           launch: Callable[..., Gateway]) -> None:
    for name in ("c1", "c2", "c3"):
        upstream.put(f"/customers/{name}", {"id": name, "plan": "pro"})
    gateway = launch(upstream_timeout=30)
    for name in ("c1", "c2", "c3"):  # newest (c3) is undone first
        assert gateway.agent.patch(f"/customers/{name}", json={"plan": "free"}).status_code == 200
    poll(lambda: all(e["state"] == "completed" for e in gateway.journal()), "the outcomes")
    upstream.script("PUT", "/customers/c2", HANG)
    result: list[dict] = []
    thread = threading.Thread(target=lambda: result.append(gateway.rollback(
        upstream="crm", dry_run=False)))
    thread.start()
    try:
        running = poll(lambda: [p for p in gateway.admin.get("/v1/rollback").json()["items"]
                                if p["progress"]["done"] == 1], "a plan one step in")
        assert running[0]["status"] == "running"
        assert running[0]["progress"] == {"steps": 3, "done": 1}
        shown = httpx.get(f"{gateway.proc.urls[1]}/v1/rollback/{running[0]['id']}",
                          headers=gateway.admin.headers).json()["plan"]
        assert shown["progress"] == {"steps": 3, "done": 1}
        # the next step's PUT is hanging at the upstream (not merely about to be sent)
        poll(lambda: "PUT" in upstream.methods("/customers/c2"), "the hanging compensation")
    finally:
        upstream.stop()  # the hanging compensation ends
        thread.join(timeout=60)
    assert result and result[0]["progress"] == {"steps": 3, "done": 3}
    c3, c2, c1 = result[0]["steps"]
    assert (c3["status"], c2["status"], c1["status"]) == ("applied", "failed", "failed")
    assert "outcome is unknown" in c2["detail"]  # cut off once sent: never "not sent"
    states = {e["path"]: e["state"] for e in gateway.journal(decision="rollback")}
    assert states["/customers/c2"] == "unknown"
