"""Operator safety (issue 7, item 8): the controls an operator relies on say the truth.

Each case runs against a real upstream that records what reaches it, so "refused"
also means "nothing was sent".
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import pytest

from gateway.settings import Settings
from gateway.store.sql import SqlStore
from tests.harness import AGENT_KEY, TOKENS, Harness, policy_text, serve_app, sha, started_gateway

RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: big-deal
  match: {methods: [POST], path: "/deals"}
  action: hold
  approval: {wait: 0, expires: 3600}
- id: edits
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
"""


@dataclass
class Upstream:
    """Records every request; ``POST /deals`` answers only once ``answer`` is set."""

    arrivals: list[tuple[str, str]] = field(default_factory=list)
    answer: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.arrivals.append((scope["method"], scope["path"]))
        if scope["method"] == "POST":
            await self.answer.wait()
        body = json.dumps({"id": "c1", "plan": "pro"}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def writes(self) -> list[tuple[str, str]]:
        return [a for a in self.arrivals if a[0] != "GET"]


@asynccontextmanager
async def gateway_with(tmp_path: Path, database_url: str | None = None,
                       **overrides: Any) -> AsyncIterator[tuple[Harness, Upstream]]:
    upstream = Upstream()
    async with serve_app(upstream) as base_url:
        try:
            async with started_gateway(
                    tmp_path, database_url or f"sqlite+aiosqlite:///{tmp_path}/db/gw.db",
                    {"crm.yaml": policy_text(base_url, RULES)}, **overrides) as gw:
                yield gw, upstream
        finally:
            upstream.answer.set()  # a held upstream call lets its server stop


async def hold(gw: Harness) -> str:
    held = await gw.agent.post("/crm/deals", json={"amount": 50000})
    assert held.status_code == 202, held.text
    return held.json()["approval"]["id"]


def approve(gw: Harness, call_id: str, role: str) -> Any:
    return gw.admin.post(f"/v1/approvals/{call_id}/approve", json={}, headers=gw.as_role(role))


# -- an operator cannot approve their own call -------------------------------------

async def test_an_operator_cannot_approve_a_call_made_under_their_own_name(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    # The agent that holds the call is named like the approver operator.
    agents = [{"name": "approver", "key_sha256": sha(AGENT_KEY)}]
    async with gateway_with(tmp_path, agents=agents) as (gw, upstream):
        upstream.answer.set()
        call_id = await hold(gw)
        own = await approve(gw, call_id, "approver")
        assert own.status_code == 403, own.text
        assert own.json()["error"]["code"] == "self_approval"
        assert upstream.writes() == []
        pending = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
        assert pending.json()["status"] == "pending" and pending.json()["approvals"] == []
        other = await approve(gw, call_id, "admin")
        assert other.status_code == 200 and other.json()["status"] == "executed", other.text
        assert upstream.writes() == [("POST", "/deals")]


@pytest.mark.parametrize("where", ["same token as the agent key", "same token, other case of hex"])
def test_settings_where_an_operator_token_is_an_agent_key_are_refused(where: str) -> None:
    digest = sha("shared-secret")
    token = digest if where.startswith("same token as") else digest.upper()
    with pytest.raises(pydantic.ValidationError, match="give each its own secret"):
        Settings(agents=[{"name": "bot", "key_sha256": digest}],
                 operators=[{"name": "ada", "role": "admin", "token_sha256": token}])
    Settings(agents=[{"name": "bot", "key_sha256": digest}],  # distinct secrets: fine
             operators=[{"name": "ada", "role": "admin", "token_sha256": sha(TOKENS["admin"])}])


# -- a kill switch that names nothing freezes nothing: refused -----------------------

@pytest.mark.parametrize("body, configured", [
    ({"upstream": "crmm"}, False),
    ({"agent": "bott"}, False),
    ({"upstream": "CRM"}, False),
    ({"upstream": "crm"}, True),
    ({"agent": "bot"}, True),
    ({}, True),
])
async def test_engage_on_a_target_that_is_not_configured_is_unknown_target(
        tmp_path: Path, body: dict[str, str], configured: bool) -> None:
    (tmp_path / "db").mkdir()
    async with gateway_with(tmp_path) as (gw, _):
        engaged = await gw.engage(**body)
        state = (await gw.admin.get("/v1/killswitch", headers=gw.as_role("viewer"))).json()
        if configured:
            assert engaged.status_code == 200, engaged.text
            assert state["engaged"] is True
        else:
            assert engaged.status_code == 400, engaged.text
            assert engaged.json()["error"]["code"] == "unknown_target"
            assert state == {"engaged": False, "freezes": []}


# -- the store's health is a write probe ---------------------------------------------

async def test_a_sqlite_store_whose_directory_was_removed_is_unhealthy_and_refuses_writes(
        tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    async with gateway_with(tmp_path) as (gw, upstream):
        healthy = await gw.admin.get("/v1/health")
        assert healthy.status_code == 200 and healthy.json()["store"] is True
        kept = tmp_path / "kept"  # the files' second names, to put them back before the stop
        kept.mkdir()
        for path in (tmp_path / "db").iterdir():
            os.link(path, kept / path.name)
        shutil.rmtree(tmp_path / "db")
        try:
            health = await gw.admin.get("/v1/health")
            write = await gw.agent.patch("/crm/customers/c1", json={"plan": "free"})
        finally:
            # the store back where it was: the refused write's audit record can be
            # appended, so stopping need not wait out the audit trail's 10 s flush
            (tmp_path / "db").mkdir()
            for path in kept.iterdir():
                os.link(path, tmp_path / "db" / path.name)
        assert health.status_code == 503, health.text
        assert health.json()["store"] is False
        assert write.status_code == 503, write.text
        assert write.json()["error"]["code"] == "journal_unavailable"
        assert upstream.writes() == []


async def test_a_sqlite_store_whose_file_was_replaced_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    async with gateway_with(tmp_path) as (gw, upstream):
        database = tmp_path / "db" / "gw.db"
        database.rename(tmp_path / "db" / "moved.db")
        database.write_bytes(b"")  # someone put another file at the path
        try:
            health = await gw.admin.get("/v1/health")
            write = await gw.agent.patch("/crm/customers/c1", json={"plan": "free"})
        finally:
            # the file back: the refused write's audit record can be appended, so
            # stopping need not wait out the audit trail's 10 s flush
            (tmp_path / "db" / "moved.db").replace(database)
        assert health.status_code == 503 and health.json()["store"] is False
        assert write.status_code == 503, write.text
        assert upstream.writes() == []


def _immutable(paths: list[Path], on: bool) -> None:
    """``chattr +i``: not even root may write (the tests run as root; chmod would not do)."""
    for path in paths:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


async def test_an_immutable_sqlite_store_with_a_writable_shm_is_unhealthy(
        tmp_path: Path) -> None:
    """Issue 17 item 10: the database, its WAL and its directory immutable, the ``-shm``
    still writable: health said ok (its probe wrote nothing) while every write failed."""
    (tmp_path / "db").mkdir()
    async with gateway_with(tmp_path) as (gw, upstream):
        healthy = await gw.admin.get("/v1/health")
        assert healthy.status_code == 200 and healthy.json()["store"] is True
        directory = tmp_path / "db"
        frozen = [directory / "gw.db", directory / "gw.db-wal", directory]
        assert all(p.exists() for p in frozen)
        _immutable(frozen, True)
        try:
            health = await gw.admin.get("/v1/health")
            write = await gw.agent.patch("/crm/customers/c1", json={"plan": "free"})
        finally:
            _immutable(frozen, False)
        assert health.status_code == 503, health.text
        assert health.json()["store"] is False and health.json()["status"] != "ok"
        assert write.status_code == 503, write.text
        assert upstream.writes() == []


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_a_read_only_postgresql_is_unhealthy(store_url: str) -> None:
    import asyncpg  # the PostgreSQL rows alone need the driver
    store = SqlStore(store_url)
    await store.start()  # migrated while writable
    try:
        assert await store.ping() is True
    finally:
        await store.close()
    database = store_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(store_url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    finally:
        await admin.close()
    read_only = SqlStore(store_url)
    await read_only.start()  # nothing to migrate: reads only
    try:
        assert await read_only.ping() is False  # a SELECT 1 would still answer
    finally:
        await read_only.close()


# -- an outcome nobody knows is "unknown", to operators and to the agent --------------

async def test_an_approved_call_that_timed_out_is_unknown_never_failed_and_never_resent(
        tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    async with gateway_with(tmp_path, upstream_timeout=0.5) as (gw, upstream):
        call_id = await hold(gw)
        approved = await approve(gw, call_id, "approver")  # the upstream never answers
        assert approved.status_code == 504, approved.text
        assert upstream.writes() == [("POST", "/deals")]
        operators = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
        assert operators.json()["status"] == "unknown"
        agent = await gw.agent.get(f"/_gateway/approvals/{call_id}")
        assert agent.status_code == 200 and agent.json()["status"] == "unknown"
        again = await approve(gw, call_id, "admin")
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"
        assert upstream.writes() == [("POST", "/deals")]  # sent once, never again
