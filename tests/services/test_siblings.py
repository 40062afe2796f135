"""``Siblings``: the master tells the workers which of them died (``gateway serve
--workers N``). Real forks share the mapping, as the master's workers do."""

from __future__ import annotations

import os

import pytest

from gateway.services.siblings import RING, Siblings


def test_a_death_is_seen_by_the_others_with_its_name() -> None:
    siblings = Siblings(2)
    try:
        pid = os.fork()
        if pid == 0:  # a worker names itself once it has a store
            code = 1
            try:
                siblings.as_worker(1)
                siblings.named("4242-deadbeef")
                code = 0
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert siblings.generation == 0
        assert siblings.died(1) == "4242-deadbeef"  # the master, once it reaped it
        assert siblings.generation == 1
        assert siblings.dead_since(0) == (1, ["4242-deadbeef"])
        assert siblings.dead_since(1) == (1, [])
        assert siblings.died(1) is None  # its replacement had not named itself yet
        assert siblings.generation == 1
    finally:
        siblings.close()


def test_only_the_last_deaths_are_kept() -> None:
    siblings = Siblings(1)
    try:
        siblings.as_worker(0)
        for n in range(RING + 3):
            siblings.named(f"worker-{n}")
            siblings.died(0)
        generation, names = siblings.dead_since(0)
        assert generation == RING + 3
        assert names == [f"worker-{n}" for n in range(3, RING + 3)]
        assert siblings.dead_since(RING + 1) == (RING + 3, [f"worker-{RING + 1}",
                                                            f"worker-{RING + 2}"])
    finally:
        siblings.close()


def test_a_worker_index_outside_the_master_is_refused() -> None:
    siblings = Siblings(2)
    try:
        with pytest.raises(ValueError):
            siblings.as_worker(2)
    finally:
        siblings.close()
