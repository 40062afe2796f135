"""Values the store suites share (the database fixtures live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.core.model import Checkpoint, JournalEntry, JournalOutcome, JournalState, Undo

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
EntryFactory = Callable[..., JournalEntry]


def _entry(n: int = 0, **changes: Any) -> JournalEntry:
    values: dict[str, Any] = dict(
        id=f"{n:032x}",
        at=T0 + timedelta(seconds=n),
        request_id=f"req-{n}",
        agent="support-bot",
        checkpoint=Checkpoint(run="run-1", model="m-1", prompt_version="p3", tool_version="t9"),
        upstream="crm",
        method="PATCH",
        path=f"/customers/{n}",
        query="expand=notes&lang=fr",
        rule="edit-customer",
        decision="allow",
        policy_revision="rev-abc",
        request_headers={"content-type": "application/json", "x-note": "Zoë"},
        request_body='{"name": "Zoë 🚀"}',
        request_body_sha256="ab" * 32,
        request_body_size=21,
        request_content_type="application/json",
        prior={"name": "Zoe", "tags": [1, 2.5, None, True]},
        prior_status=200,
        capture_path=f"/customers/{n}",
        undo=Undo("PUT", f"/customers/{n}", {"name": "Zoe"}),
        reversible=True,
        resend_key=f"{n:064x}",
    )
    values.update(changes)
    return JournalEntry(**values)


@pytest.fixture
def make_entry() -> EntryFactory:
    """``make_entry(n, **changes)``: entry ``n`` is ``n`` seconds after T0, id ``n`` in hex."""
    return _entry


@pytest.fixture
def outcome() -> JournalOutcome:
    return JournalOutcome(
        state=JournalState.COMPLETED,
        status=201,
        response_headers={"content-type": "application/json", "location": "/customers/ñ"},
        response_body='{"ok": true, "note": "日本語"}',
        response_body_sha256="cd" * 32,
        response_body_size=33,
        undo=Undo("DELETE", "/customers/ñ", None, "application/x-www-form-urlencoded"),
        reversible=False,
        error=None,
        timings={"capture": 1.25, "upstream": 12.000001, "total": 0.1},
        completed_at=T0 + timedelta(milliseconds=7, microseconds=3),
    )
