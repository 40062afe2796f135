"""Counters for ``GET /metrics`` in the Prometheus text format.

Kept to plain dicts: the hot path increments an integer, nothing more.
"""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.decisions: Counter[tuple[str, str]] = Counter()  # (upstream, decision)
        self.journal_writes = 0
        self.freezes_engaged = 0
        self.policy_reloads: Counter[str] = Counter()  # ok | failed
        self.tripwires_tripped: Counter[str] = Counter()  # by tripwire id

    def render(self, frozen: int, revision: str) -> str:
        lines = [
            "# HELP gateway_decisions_total Calls by upstream and decision.",
            "# TYPE gateway_decisions_total counter",
        ]
        for (upstream, decision), count in sorted(self.decisions.items()):
            lines.append(f'gateway_decisions_total{{upstream="{upstream}",'
                         f'decision="{decision}"}} {count}')
        lines += [
            "# HELP gateway_journal_entries_total Mutating calls journaled by this process.",
            "# TYPE gateway_journal_entries_total counter",
            f"gateway_journal_entries_total {self.journal_writes}",
            "# HELP gateway_freezes_active Kill-switch freezes in force.",
            "# TYPE gateway_freezes_active gauge",
            f"gateway_freezes_active {frozen}",
            "# HELP gateway_policy_reloads_total Policy reloads by result.",
            "# TYPE gateway_policy_reloads_total counter",
        ]
        for result in ("ok", "failed"):
            lines.append(f'gateway_policy_reloads_total{{result="{result}"}} '
                         f"{self.policy_reloads[result]}")
        lines += ["# HELP gateway_tripwires_tripped_total Tripwire trips by tripwire.",
                  "# TYPE gateway_tripwires_tripped_total counter"]
        lines += [f'gateway_tripwires_tripped_total{{tripwire="{name}"}} {count}'
                  for name, count in sorted(self.tripwires_tripped.items())]
        lines += ["# HELP gateway_policy_info The loaded policy revision.",
                  "# TYPE gateway_policy_info gauge",
                  f'gateway_policy_info{{revision="{revision}"}} 1']
        return "\n".join(lines) + "\n"
