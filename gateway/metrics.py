"""What ``GET /metrics`` shows, kept with prometheus-client.

Chosen over OpenTelemetry metrics with its Prometheus exporter by measuring
both (``bench/metrics_libs.py``): what one proxied write records (two
counters, five histogram observations) cost a median 7.5 us with
prometheus-client (label children cached per label set, as here) and 100 us
with the OpenTelemetry SDK, on the same (busy) 2-core machine. Each
``Metrics`` has its own registry, so several gateways in one process (tests)
never share a series.

Counters count what happened in this process; the gauges are set when
scraped from the state that is the truth (the store, the freezes in force,
the loaded policy set). Label values are bounded: upstreams are the
configured ones (anything else is ``_other``, see the proxy listener),
decisions are the contract's.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self._decisions = Counter("gateway_decisions", "Calls by upstream and decision.",
                                  ["upstream", "decision"], registry=registry)
        self._requests = Histogram(
            "gateway_request_duration_seconds",
            "Agent calls from the first byte read to the last byte sent, by decision.",
            ["upstream", "decision"], buckets=SECONDS, registry=registry)
        self._upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Forwarded calls: request sent to response headers received.",
            ["upstream"], buckets=SECONDS, registry=registry)
        self._capture = Histogram("gateway_capture_duration_seconds",
                                  "Prior-state reads before writes.", ["upstream"],
                                  buckets=SECONDS, registry=registry)
        self._journal = Histogram("gateway_journal_write_duration_seconds",
                                  "Journal writes (intent and outcome) to the store.",
                                  buckets=SECONDS, registry=registry)
        self._would = Counter("gateway_would_decide",
                              "Calls under mode observe or shadow, by what the rules decided "
                              "(and the mode did not enforce).",
                              ["upstream", "mode", "would_decide"], registry=registry)
        self._entries = Counter("gateway_journal_entries",
                                "Mutating calls journaled by this process.", registry=registry)
        self._reloads = Counter("gateway_policy_reloads", "Policy reloads by result.",
                                ["result"], registry=registry)
        self._tripped = Counter("gateway_tripwires_tripped", "Tripwire trips by tripwire.",
                                ["tripwire"], registry=registry)
        self._engaged = Counter("gateway_freezes_engaged",
                                "Kill-switch freezes engaged through this process "
                                "(operators and tripwires).", registry=registry)
        self._pending = Gauge("gateway_approvals_pending", "Held calls waiting for a decision.",
                              registry=registry)
        self._frozen = Gauge("gateway_freezes_active", "Kill-switch freezes in force.",
                             registry=registry)
        self._policy = Gauge("gateway_policy_info", "The loaded policy revision.", ["revision"],
                             registry=registry)
        for result in ("ok", "failed"):
            self._reloads.labels(result)
        self._calls: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._steps: dict[tuple[str, str], Histogram] = {}

    # the hot path: label children are looked up once per label set, then cached
    def call(self, upstream: str, decision: str, seconds: float) -> None:
        """One agent call answered (any decision), with its whole duration."""
        children = self._calls.get((upstream, decision))
        if children is None:
            children = self._calls[(upstream, decision)] = (
                self._decisions.labels(upstream, decision),
                self._requests.labels(upstream, decision))
        children[0].inc()
        children[1].observe(seconds)

    def would_decide(self, upstream: str, mode: str, verdict: str) -> None:
        self._would.labels(upstream, mode, verdict).inc()

    def upstream(self, upstream: str, seconds: float) -> None:
        self._child(self._upstream, upstream).observe(seconds)

    def capture(self, upstream: str, seconds: float) -> None:
        self._child(self._capture, upstream).observe(seconds)

    def journal_write(self, seconds: float, new_entry: bool) -> None:
        self._journal.observe(seconds)
        if new_entry:
            self._entries.inc()

    def _child(self, histogram: Histogram, upstream: str) -> Histogram:
        key = (histogram._name, upstream)
        child = self._steps.get(key)
        if child is None:
            child = self._steps[key] = histogram.labels(upstream)
        return child

    # operator events
    def policy_reloaded(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "failed").inc()

    def tripwire_tripped(self, tripwire: str) -> None:
        self._tripped.labels(tripwire).inc()

    def freeze_engaged(self) -> None:
        self._engaged.inc()

    def render(self, frozen: int, revision: str, pending: int | None = None) -> bytes:
        """The Prometheus text exposition, gauges set from the state given."""
        self._frozen.set(frozen)
        if pending is not None:
            self._pending.set(pending)
        self._policy.clear()
        self._policy.labels(revision).set(1)
        return generate_latest(self.registry)
