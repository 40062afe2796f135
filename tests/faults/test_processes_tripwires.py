"""Issue 16 item 5: tripwire windows count across every process sharing the store and
survive restarts: a limit of 5 is 5 for the fleet.

Real ``gateway serve --workers 2`` on SQLite and PostgreSQL, a real upstream; each
write goes on a new connection, so the kernel spreads them over both workers.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.procs_support import RULES, Gateway, configure
from tests.faults.procs_upstream import FaultUpstream

FIVE = """tripwires:
  - {id: five, kind: writes, limit: 5, window: 600, per: upstream, action: hold}
"""


def test_a_limit_of_five_is_five_for_two_workers_and_after_a_restart(
        tmp_path: Path, store_url: str) -> None:
    upstream = FaultUpstream({"/items/a": {"name": "a", "v": 0}})
    config = configure(tmp_path, store_url, upstream.url, RULES, FIVE)
    try:
        workers = Gateway(config, "--workers", "2")
        try:
            statuses = [workers.call("PATCH", "/items/a", json={"v": n},
                                     headers={"Prefer": "wait=0"}).status_code
                        for n in range(12)]
        finally:
            workers.stop()
        assert statuses[:5] == [200] * 5, statuses
        assert set(statuses[5:]) == {202}, statuses  # held: over the fleet's limit
        assert len(upstream.received("PATCH")) == 5
        restarted = Gateway(config)  # the window is in the store, not in a process
        try:
            after = restarted.call("PATCH", "/items/a", json={"v": 99},
                                   headers={"Prefer": "wait=0"})
        finally:
            restarted.stop()
        assert after.status_code == 202, after.text
        assert len(upstream.received("PATCH")) == 5
    finally:
        upstream.close()
