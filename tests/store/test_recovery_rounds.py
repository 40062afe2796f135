"""Recovery's rounds (``gateway.services.recovery``) on a real store: after a store
outage nobody is taken over until the live processes could renew their heartbeats,
and a round that fails past its heartbeat never holds that back.

The journal and rollbacks beside it are stand-ins: only what a round asks of them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from gateway.core.model import JournalState, utcnow
from gateway.services.recovery import Recovery
from gateway.store.sql import SqlStore
from tests.store.conftest import EntryFactory

LEASE = 0.3  # seconds: a round every 0.1


class _Journal:
    async def lost_outcomes(self, process: str, before: datetime) -> None:
        return None


class _Rollbacks:
    async def resume_unfinished(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class _Store:
    """The real store, but ``down`` fails every call, and ``untidy`` fails ``tidy``
    (a round's last step) for ever."""

    def __init__(self, store: SqlStore) -> None:
        self._store, self.down, self.untidy = store, False, False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if not callable(real):
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down or (self.untidy and name == "tidy"):
                raise ConnectionError("the store is down")
            return await real(*args, **kwargs)
        return call


async def _dead_process(store_url: str, make_entry: EntryFactory) -> str:
    """A process that journaled an intent and whose heartbeat has lapsed."""
    gone = SqlStore(store_url, process="gone")
    await gone.start()
    try:
        entry = make_entry(1)
        assert await gone.journal_intent(entry)
        assert await gone.take_lease("process:gone", "gone", utcnow() - timedelta(seconds=10),
                                     1)
    finally:
        await gone.close()
    return entry.id


async def _state(store: SqlStore, entry_id: str) -> JournalState:
    found = await store.get_journal(entry_id)
    assert found is not None
    return found.state


async def test_after_an_outage_nobody_is_taken_over_for_a_lease_and_a_round(
        store: SqlStore, store_url: str, make_entry: EntryFactory) -> None:
    entry_id = await _dead_process(store_url, make_entry)
    flaky = _Store(store)
    recovery = Recovery(flaky, _Rollbacks(), _Journal(), "live",  # type: ignore[arg-type]
                        LEASE, horizon=60)
    flaky.down = True
    await recovery._round()  # the heartbeat cannot be renewed: the store is down
    flaky.down = False
    await recovery._round()  # back: "gone" may be alive, renewing its heartbeat now
    assert await _state(store, entry_id) is JournalState.INTENT
    deadline = time.monotonic() + 10
    while await _state(store, entry_id) is JournalState.INTENT:  # rounds go on, no renewal
        assert time.monotonic() < deadline, "the dead process was never taken over"
        await recovery._round()
    assert time.monotonic() >= recovery._trust_from  # taken over, once a lease and a round
    assert recovery._trust_from > 0                   # had passed since the store was back


async def test_a_round_failing_past_its_heartbeat_still_takes_the_dead_over(
        store: SqlStore, store_url: str, make_entry: EntryFactory) -> None:
    """A step after the heartbeat that fails every round (here the last one) is not an
    outage: the heartbeat was renewed, so nobody's lapsed for want of a store."""
    flaky = _Store(store)
    flaky.untidy = True
    recovery = Recovery(flaky, _Rollbacks(), _Journal(), "live",  # type: ignore[arg-type]
                        LEASE, horizon=60)
    await recovery._round()  # fails at its end
    entry_id = await _dead_process(store_url, make_entry)
    await recovery._round()  # fails at its end again, having taken "gone" over
    assert await _state(store, entry_id) is JournalState.UNKNOWN
