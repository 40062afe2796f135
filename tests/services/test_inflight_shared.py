"""``SharedCounts``: ``max_in_flight`` counted across the forks of one master, a dead
worker's slots freed by ``forget`` (a real fork; the whole path with ``gateway serve
--workers 2`` is ``tests/faults/test_backpressure.py``)."""

from __future__ import annotations

import os

import pytest

from gateway.services import inflight_shared
from gateway.services.inflight_shared import SharedCounts


def test_forks_count_together_and_a_dead_ones_slots_are_freed() -> None:
    counts = SharedCounts(2)
    pid = os.fork()
    if pid == 0:  # worker 1 takes both slots and dies holding them
        code = 2
        try:
            counts.as_worker(1)
            code = 0 if counts.take("crm", 2) and counts.take("crm", 2) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    counts.as_worker(0)
    assert counts.take("crm", 2) is False and counts.in_flight("crm") == 2
    assert counts.take("billing", 2) is True  # each upstream its own count
    counts.forget(1)
    assert counts.take("crm", 2) is True and counts.in_flight("crm") == 1
    counts.give_back("crm")
    assert counts.in_flight("crm") == 0
    counts.close()


def test_a_full_table_leaves_the_count_to_the_process(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(inflight_shared, "ENTRIES", 2)
    counts = SharedCounts(1)
    counts.as_worker(0)
    assert counts.take("a", 5) and counts.take("b", 5)
    assert counts.take("c", 5) is None  # no room: InFlightLimits counts it alone
    assert "counted per worker" in caplog.text
    counts.close()


def test_a_worker_index_beyond_the_master_is_refused() -> None:
    counts = SharedCounts(2)
    with pytest.raises(ValueError):
        counts.as_worker(2)
    counts.close()
