"""Sealed values on every backend: exact round trips, nothing readable at rest, and a
wrong key that fails closed (``gateway.core.seal``)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.core.approvals import ApprovalStatus, HeldCall, request_digest
from gateway.core.model import Checkpoint, JournalOutcome, JournalState
from gateway.core.rollback import Plan, PlanStatus, Step
from gateway.core.seal import Sealer
from gateway.errors import SealError
from gateway.store.sql import SqlStore
from tests.store.conftest import T0, EntryFactory

CANARY = "cnry-sealed-5f1e"
KEY, OTHER = b"a" * 32, b"b" * 32


def _held(query: str, body: bytes) -> HeldCall:
    headers = (("content-type", "application/json"), ("x-auth-token", CANARY + "-h"))
    return HeldCall(id="h1", at=T0, agent="bot", upstream="crm", method="PATCH",
                    raw_path="/deals/1", query=query, headers=headers, body=body,
                    checkpoint=Checkpoint(), rule="held", policy_revision="r",
                    digest=request_digest("PATCH", "crm", "/deals/1", query, headers, body))


async def _raw(store: SqlStore, store_url: str) -> str:
    """Every row of every table, as text (what someone with the database reads)."""
    if store_url.startswith("postgresql"):
        import asyncpg  # the PostgreSQL rows alone need the driver

        connection = await asyncpg.connect(store_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            tables = [r[0] for r in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            rows = []
            for table in tables:
                rows += [r[0] for r in await connection.fetch(f'SELECT t::text FROM "{table}" t')]
            return "\n".join(rows)
        finally:
            await connection.close()
    path = Path(store_url.split("///", 1)[1])
    return "".join(p.read_bytes().decode("latin-1") for p in path.parent.iterdir()
                   if p.name.startswith(path.name) and not p.name.endswith(".key"))


# (row id, query, body): a held call's secrets in each place, sealed and back exactly
HELD_ROWS = [
    ("query", f"api_key={CANARY}&page=2", b'{"stage": "won"}'),
    ("json body", "", b'{"stage": "won", "password": "' + CANARY.encode() + b'"}'),
    ("nested json body", "", b'{"auth": {"client_secret": "' + CANARY.encode() + b'"}}'),
]


@pytest.mark.parametrize(("row", "query", "body"), HELD_ROWS, ids=[r[0] for r in HELD_ROWS])
async def test_a_held_call_is_sealed_at_rest_and_comes_back_exact(
        row: str, query: str, body: bytes, store_url: str) -> None:
    store = SqlStore(store_url, sealer=Sealer(KEY))
    await store.start()
    try:
        call = _held(query, body)
        await store.create_held(call)
        response = {"status": 200, "headers": {"content-type": "application/json"},
                    "body": '{"token": "' + CANARY + '-r"}', "body_encoding": None}
        await store.claim_held(call.id, (), (), "alice", T0, T0 + timedelta(minutes=1))
        await store.finish_held(call.id, ApprovalStatus.EXECUTED, response, None, None)
        got = await store.get_held(call.id)
        raw = await _raw(store, store_url)
    finally:
        await store.close()
    assert got is not None
    assert (got.query, got.headers, got.body, got.response) == (
        call.query, call.headers, call.body, response)
    assert CANARY not in raw


async def test_a_held_call_under_another_key_is_redacted_and_says_why(store_url: str) -> None:
    first = SqlStore(store_url, sealer=Sealer(KEY))
    await first.start()
    await first.create_held(_held(f"token={CANARY}", b"{}"))
    await first.close()
    second = SqlStore(store_url, sealer=Sealer(OTHER))
    await second.start()
    try:
        got = await second.get_held("h1")
    finally:
        await second.close()
    assert got is not None and CANARY not in got.query
    assert "does not open" in got.extra["sealed_error"]


async def test_journal_sealed_columns_round_trip_through_intent_and_outcome(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    entry = make_entry(1, sealed="gw1:intent-sealed", irreversible_reason=None)
    await store.journal_intent(entry)
    await store.journal_outcome(entry.id, dataclasses.replace(outcome, sealed="gw1:outcome"))
    bare = make_entry(2, undo=None, reversible=False, irreversible_reason="over the limit")
    await store.journal_intent(bare)
    got = await store.get_journal(entry.id)
    other = await store.get_journal(bare.id)
    assert got is not None and other is not None
    assert (got.sealed, got.sealed_outcome, got.state) == (
        "gw1:intent-sealed", "gw1:outcome", JournalState.COMPLETED)
    assert (other.sealed, other.sealed_outcome, other.irreversible_reason) == (
        None, None, "over the limit")


async def test_a_steps_seal_round_trips(store: SqlStore) -> None:
    step = Step(seq=0, entry_id="e1", upstream="crm", method="PUT", path="/c/1",
                body={"api_key": "[REDACTED]"}, content_type="application/json",
                target="/c/1", expected=None, sealed="gw1:step")
    plan = Plan("p1", T0, "admin", {"run": "r"}, False, PlanStatus.DRY_RUN, (step,))
    await store.create_plan(plan)
    got = await store.get_plan("p1")
    assert got is not None and got.steps[0].sealed == "gw1:step"


# (row id, sealer that seals, sealer that opens, expected error or None)
OPEN_ROWS = [
    ("same key", Sealer(KEY), Sealer(KEY), None),
    ("other key", Sealer(KEY), Sealer(OTHER), "does not open"),
    ("no key now", Sealer(KEY), Sealer(None), "no journal key is configured"),
    ("no key then", Sealer(None), Sealer(KEY), "no journal key was configured"),
]


@pytest.mark.parametrize(("row", "sealer", "opener", "error"), OPEN_ROWS,
                         ids=[r[0] for r in OPEN_ROWS])
def test_opening_fails_closed(row: str, sealer: Sealer, opener: Sealer,
                              error: str | None) -> None:
    value = {"undo": {"body": {"password": CANARY}}}
    sealed = sealer.seal(value, "journal")
    assert CANARY not in sealed
    if error is None:
        assert opener.open(sealed, "journal") == value
        with pytest.raises(SealError):  # bound to its purpose: not openable as another
            opener.open(sealed, "approval")
    else:
        with pytest.raises(SealError, match=error):
            opener.open(sealed, "journal")
