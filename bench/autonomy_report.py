"""How long the autonomy report takes over a month of decisions.

Fills a fresh store (SQLite file, and PostgreSQL when reachable) with N
``call.*`` audit records spread over 30 days (the records the proxy writes:
upstream, rule, would-be decision in the JSON detail), 500 held calls and
1000 journal entries, then times ``autonomy_report`` for the whole month and
for one day, median of 5 runs each. The counts are grouped by the database
(``json_extract`` / ``->>``), so the month's time grows with N while a day's
stays small (the ``ix_audit_at`` index).

    .venv/bin/python bench/autonomy_report.py            # N = 100000
    .venv/bin/python bench/autonomy_report.py --records 300000 --no-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.approvals import ApprovalStatus, HeldCall  # noqa: E402
from gateway.core.model import Checkpoint, JournalEntry, JournalState  # noqa: E402
from gateway.core.policy.loader import load_policy_set  # noqa: E402
from gateway.services.reports import autonomy_report  # noqa: E402
from gateway.store.sql import SqlStore  # noqa: E402

POLICY = """\
upstream: crm
base_url: http://127.0.0.1:3000
rules:
  - {id: edit, match: {methods: [PATCH]}, action: allow}
  - {id: big, match: {methods: [POST]}, action: hold}
  - {id: gone, match: {methods: [DELETE]}, action: deny, mode: observe}
"""
NOW = datetime(2026, 12, 1, tzinfo=UTC)
KINDS = [("call.allow", {"rule": "edit"}), ("call.hold", {"rule": "big"}),
         ("call.allow", {"rule": "gone", "mode": "observe", "would_decide": "deny"}),
         ("call.deny", {"rule": None}), ("call.frozen", {"rule": "edit"})]


async def fill(store: SqlStore, records: int) -> None:
    step = timedelta(days=30) / records
    batch = []
    for n in range(records):
        action, facts = KINDS[n % len(KINDS)]
        detail = {"request_id": uuid.uuid4().hex, "method": "PATCH", "path": "/crm/x",
                  "upstream": "crm", **facts, "status": 200}
        batch.append((f"agent-{n % 7}", action, detail, NOW - timedelta(days=30) + n * step))
        if len(batch) == 5000:
            await store.append_audit_many(batch)
            batch = []
    if batch:
        await store.append_audit_many(batch)
    for n in range(500):
        at = NOW - timedelta(days=30) + timedelta(hours=n)
        await store.create_held(HeldCall(
            id=uuid.uuid4().hex, at=at, agent=f"agent-{n % 7}", upstream="crm", method="POST",
            raw_path="/deals", query="", headers=(), body=b"{}", checkpoint=Checkpoint(),
            rule="big", policy_revision="r", digest="d",
            status=ApprovalStatus.EXECUTED if n % 9 else ApprovalStatus.REJECTED,
            decided_by="alice", decided_at=at + timedelta(seconds=30 + n % 60)))
    for n in range(1000):
        await store.journal_intent(JournalEntry(
            id=uuid.uuid4().hex, at=NOW - timedelta(hours=n / 2), request_id="r",
            agent=f"agent-{n % 7}", checkpoint=Checkpoint(), upstream="crm", method="PATCH",
            path="/x", query="", rule="edit", decision="allow", policy_revision="r",
            request_headers={}, request_body=None, request_body_sha256=None,
            request_body_size=0, request_content_type=None, prior=None, prior_status=None,
            capture_path=None, undo=None, reversible=False,
            state=JournalState.ROLLED_BACK if n % 10 == 0 else JournalState.COMPLETED))


async def measure(url: str, records: int) -> dict[str, float]:
    store = SqlStore(url)
    await store.start()
    try:
        began = time.perf_counter()
        await fill(store, records)
        filled = time.perf_counter() - began
        policies, problems = load_policy_set({"crm.yaml": POLICY}, {})
        assert policies is not None, problems
        out = {"fill_s": filled}
        for name, since in (("month", NOW - timedelta(days=30)), ("day", NOW - timedelta(days=1))):
            times = []
            for _ in range(5):
                began = time.perf_counter()
                report = await autonomy_report(store, policies, since, NOW, None, NOW)
                times.append(time.perf_counter() - began)
            calls = sum(r["calls"]["total"] for r in report["rows"])
            out[f"{name}_ms"] = statistics.median(times) * 1000
            out[f"{name}_calls"] = calls
        return out
    finally:
        await store.close()


async def postgres_url() -> str | None:
    import asyncpg
    server = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        admin = await asyncpg.connect(server, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    name = f"gw_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return server.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/" + name


async def drop(url: str) -> None:
    import asyncpg
    server = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = await asyncpg.connect(server, timeout=5)
    await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db")]
        pg = None if args.no_postgres else await postgres_url()
        if pg:
            targets.append(("postgresql", pg))
        print(f"{'store':<11}{'records':>9}{'month ms':>10}{'(calls)':>9}{'day ms':>9}{'(calls)':>9}")
        try:
            for name, url in targets:
                got = await measure(url, args.records)
                print(f"{name:<11}{args.records:>9}{got['month_ms']:>10.1f}"
                      f"{got['month_calls']:>9.0f}{got['day_ms']:>9.1f}{got['day_calls']:>9.0f}")
        finally:
            if pg:
                await drop(pg)


if __name__ == "__main__":
    asyncio.run(main())
