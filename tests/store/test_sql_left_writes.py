"""A write whose agent left on its way, and the resends that rejoin it
(``gateway.store.left_writes``): on every backend, one resend at a time, across
processes, and its answer kept exactly where the store can seal it, redacted where not."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway.core.model import JournalOutcome
from gateway.core.resend import ANSWERED, NOT_SENT, SENDING, UNKNOWN, LeftWrite
from gateway.core.seal import Sealer
from gateway.store.sql import SqlStore
from tests.store.conftest import T0, EntryFactory

LEFT = T0 + timedelta(seconds=30)
ANSWER = {"status": 201, "headers": {"content-type": "application/json"},
          "body": '{"id": "r-1", "client_secret": "cs_live_1"}', "body_encoding": None}


def left(n: int = 1, key: str = "key", at: object = LEFT) -> LeftWrite:
    return LeftWrite(f"{n:032x}", key, "support-bot", at)  # type: ignore[arg-type]


async def test_a_left_write_is_rejoined_by_one_resend_at_a_time(store: SqlStore) -> None:
    assert await store.rejoin_write("key", "support-bot", T0) is None  # nothing left
    await store.leave_write(left(1))
    assert await store.rejoin_write("other", "support-bot", T0) is None  # another request
    assert await store.rejoin_write("key", "other-bot", T0) is None  # another agent's
    assert await store.rejoin_write("key", "support-bot", LEFT + timedelta(seconds=1)) is None
    found = await store.rejoin_write("key", "support-bot", T0)
    assert found == left(1) and found.state == SENDING and not found.settled
    assert await store.rejoin_write("key", "support-bot", T0) is None  # a resend waits on it
    again = LEFT + timedelta(seconds=5)  # that resend left in turn: the next one rejoins
    await store.leave_write(left(1, at=again))
    assert await store.rejoin_write("key", "support-bot", T0) == left(1, at=again)


async def test_how_a_left_write_ended_is_kept_with_its_answer(store: SqlStore) -> None:
    store.sealer = Sealer(b"k" * 32, "a test key")
    for n, state in enumerate((ANSWERED, UNKNOWN, NOT_SENT)):
        await store.leave_write(left(n, key=f"key-{n}"))
        await store.settle_left(f"{n:032x}", state, ANSWER if state == ANSWERED else None)
    answered = await store.left_write(f"{0:032x}")
    assert answered is not None and answered.settled and answered.response == ANSWER  # exact
    assert [(await store.left_write(f"{n:032x}")).state for n in range(3)] == [  # type: ignore[union-attr]
        ANSWERED, UNKNOWN, NOT_SENT]
    await store.leave_write(left(0, key="key-0", at=LEFT + timedelta(seconds=9)))
    assert (await store.left_write(f"{0:032x}")).response == ANSWER  # type: ignore[union-attr]


async def test_without_its_key_the_answer_is_read_redacted(store: SqlStore) -> None:
    """The secret in the answer is kept sealed only: a store that cannot open it (no key)
    gives the redacted answer, never the secret."""
    store.sealer = Sealer(b"k" * 32, "a test key")
    await store.leave_write(left(1))
    await store.settle_left(f"{1:032x}", ANSWERED, ANSWER)
    store.sealer = Sealer(b"x" * 32, "another key")
    kept = await store.left_write(f"{1:032x}")
    assert kept is not None and "cs_live_1" not in str(kept.response)
    assert kept.response is not None and kept.response["status"] == 201


async def test_resends_racing_in_two_processes_rejoin_once(store: SqlStore,
                                                           store_url: str) -> None:
    other = SqlStore(store_url)
    await other.start()
    try:
        for n in range(3):
            await store.leave_write(left(10 + n, key=f"key-{n}"))
            found = await asyncio.gather(*(
                (store, other)[i % 2].rejoin_write(f"key-{n}", "support-bot", T0)
                for i in range(10)))
            assert [f.entry_id for f in found if f is not None] == [f"{10 + n:032x}"]
    finally:
        await other.close()


async def test_marks_a_day_old_go_with_the_next_one(store: SqlStore) -> None:
    await store.leave_write(left(1, key="old"))
    await store.leave_write(left(2, key="recent", at=LEFT + timedelta(hours=23)))
    await store.leave_write(left(3, key="new", at=LEFT + timedelta(days=1, seconds=1)))
    assert await store.left_write(f"{1:032x}") is None
    assert await store.left_write(f"{2:032x}") is not None
    assert await store.left_write(f"{3:032x}") is not None


async def test_resends_of_several_left_writes_racing_each_rejoin_one(
        store: SqlStore, store_url: str) -> None:
    """Three identical writes left (an agent that sent them in parallel and gave up), then
    their three resends at once, in two processes: each rejoins a write of its own. Before,
    they all read the same newest mark, one claimed it, and the two that lost were sent."""
    other = SqlStore(store_url)
    await other.start()
    try:
        for n in range(3):
            await store.leave_write(left(20 + n, at=LEFT + timedelta(seconds=n)))
        found = await asyncio.gather(*(
            (store if n % 2 else other).rejoin_write("key", "support-bot", T0)
            for n in range(3)))
        assert sorted(f.entry_id for f in found if f is not None) == [
            f"{20 + n:032x}" for n in range(3)]
        assert await store.rejoin_write("key", "support-bot", T0) is None  # all taken
    finally:
        await other.close()


async def test_a_starting_process_reads_the_keys_no_resend_waits_on(store: SqlStore) -> None:
    await store.leave_write(left(1, key="claimed"))
    await store.leave_write(left(2, key="free"))
    await store.leave_write(left(3, key="free"))
    await store.leave_write(left(4, key="old", at=T0))
    assert await store.rejoin_write("claimed", "support-bot", T0) is not None
    assert await store.left_keys(T0 + timedelta(seconds=1)) == ["free"]


async def test_a_dead_process_writes_on_their_way_are_marked_unknown_once(
        store: SqlStore, make_entry: EntryFactory, outcome: JournalOutcome) -> None:
    """``strand_writes``: the intents an agent sent (a resend key) of the dead process,
    through the hot path's insert (on PostgreSQL ``gateway_journal_write``'s row type,
    0027), become marks with an unknown outcome; a mark its agent made while it was
    sending changes to unknown, a claimed one stays claimed, a settled write is none."""
    sent, settled, executed, left_before, claimed = (
        make_entry(n, resend_key=f"key-{n}") for n in range(5))
    executed.resend_key = None  # a held call's execution: no agent resends it
    for entry in (sent, settled, executed, left_before, claimed):
        assert await store.journal_intent(entry)
    await store.journal_outcome(settled.id, outcome)
    await store.leave_write(LeftWrite(left_before.id, "key-3", "support-bot", LEFT))
    await store.leave_write(LeftWrite(claimed.id, "key-4", "support-bot", LEFT))
    await store.settle_left(claimed.id, UNKNOWN)
    assert await store.rejoin_write("key-4", "support-bot", T0) is not None  # waits on it

    assert await store.sending_processes() == [store.process]
    assert await store.strand_writes("another-process", LEFT) == []
    assert await store.strand_writes(store.process, LEFT) == ["key-0", "key-3", "key-4"]
    first = await store.rejoin_write("key-0", "support-bot", T0)
    assert first is not None and (first.entry_id, first.state) == (sent.id, UNKNOWN)
    again = await store.rejoin_write("key-3", "support-bot", T0)
    assert again is not None and again.state == UNKNOWN  # was sending: its process is gone
    assert await store.rejoin_write("key-4", "support-bot", T0) is None  # still claimed
    assert await store.rejoin_write("key-1", "support-bot", T0) is None  # it was settled
    assert await store.strand_writes(store.process, LEFT) == ["key-0", "key-3", "key-4"]
    assert await store.rejoin_write("key-0", "support-bot", T0) is None  # the claim stays
    read = await store.get_journal(sent.id)
    assert read is not None and read.resend_key == "key-0"
