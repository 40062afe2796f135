"""A tripwire's window across a failover, with real processes: two gateways on a
primary and its synchronous standby (``tests.replicated``). The counts are in the
store, committed with the standby: writes counted before the primary crashed
still count on the promoted standby, so a limit of 5 is 5 for the fleet across
it (a row proving the property)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.e2e.test_failover_processes import BOT, RULES, pair, upstream
from tests.harness import policy_text
from tests.replicated import Pair

__all__ = ["pair", "upstream"]  # fixtures shared with test_failover_processes

FIVE = """tripwires:
  - {id: five, kind: writes, limit: 5, window: 600, per: upstream, action: hold}
"""


@pytest.fixture
def gateways(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES,
                                                                extra=FIVE))
    started = start_gateways(write_settings(tmp_path, pair.url(), engage_wait=1.0), 2)
    yield started
    for proc in started:
        proc.stop()


def test_a_limit_of_five_is_five_across_a_failover(
        pair: Pair, gateways: list[Proc], upstream: Recorder) -> None:
    proxies = [g.urls[0] for g in gateways]

    def write(n: int) -> int:
        return httpx.patch(f"{proxies[n % 2]}/crm/items/i{n}", json={"n": n}, timeout=60,
                           headers={**BOT, "Prefer": "wait=0"}).status_code
    assert [write(n) for n in range(3)] == [200] * 3
    pair.fail_over()
    after = []
    for n in range(3, 40):  # refused (503) until a process reaches the new primary
        after.append(write(n))
        if after[-1] == 202:
            break
    assert set(after) <= {200, 202, 503}, after
    assert after[-1] == 202, after  # held: over the fleet's limit
    sent = [a for a in upstream.log if a.method == "PATCH"]
    assert len(sent) == after.count(200) + 3 <= 5, (after, sent)
