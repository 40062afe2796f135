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

What every call records (its decision, its duration, the upstream's and the
journal's) is counted in plain lists by ``_Counts`` and ``_Histogram``,
collected into the registry when scraped: prometheus-client's own take a
lock per increment (an observation is two), 6-9 us of each proxied GET,
against about 1 us here. They are recorded only on the event loop's thread
(every step of a call runs there); the exposition is the same text.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LE = [floatToGoString(bound) for bound in SECONDS] + ["+Inf"]  # type: ignore[no-untyped-call]


class _Series:
    """One histogram's counts for one label set: per bucket (the last is +Inf), and sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(SECONDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(SECONDS, seconds)] += 1  # the first bound >= seconds
        self.total += seconds


class _Histogram:
    """A histogram family whose series are created on first use, like a labelled
    prometheus-client ``Histogram`` (one without labels has its series from the start)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.series: dict[tuple[str, ...], _Series] = {} if labels else {(): _Series()}
        registry.register(self)

    def of(self, *values: str) -> _Series:
        found = self.series.get(values)
        if found is None:
            found = self.series[values] = _Series()
        return found

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, series in list(self.series.items()):
            running, cumulative = 0, []
            for le, count in zip(_LE, series.buckets, strict=True):
                running += count
                cumulative.append((le, float(running)))
            family.add_metric(list(values), cumulative, series.total)
        yield family


class _Counts:
    """A counter family, its values by label set (``_total`` in the exposition)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {} if labels else {(): 0}
        registry.register(self)

    def inc(self, *values: str) -> None:
        self.counts[values] = self.counts.get(values, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in list(self.counts.items()):
            family.add_metric(list(values), float(count))
        yield family


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self._decisions = _Counts("gateway_decisions", "Calls by upstream and decision.",
                                  ("upstream", "decision"), registry)
        self._requests = _Histogram(
            "gateway_request_duration_seconds",
            "Agent calls from the first byte read to the last byte sent, by decision.",
            ("upstream", "decision"), registry)
        self._upstream = _Histogram(
            "gateway_upstream_duration_seconds",
            "Forwarded calls: request sent to response headers received.", ("upstream",),
            registry)
        self._capture = _Histogram("gateway_capture_duration_seconds",
                                   "Prior-state reads before writes.", ("upstream",), registry)
        self._journal = _Histogram("gateway_journal_write_duration_seconds",
                                   "Journal writes (intent and outcome) to the store.", (),
                                   registry).of()
        self._would = Counter("gateway_would_decide",
                              "Calls under mode observe or shadow, by what the rules decided "
                              "(and the mode did not enforce).",
                              ["upstream", "mode", "would_decide"], registry=registry)
        self._entries = _Counts("gateway_journal_entries",
                                "Mutating calls journaled by this process.", (), registry)
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

    # the hot path, on the event loop's thread
    def call(self, upstream: str, decision: str, seconds: float) -> None:
        """One agent call answered (any decision), with its whole duration."""
        self._decisions.inc(upstream, decision)
        self._requests.of(upstream, decision).observe(seconds)

    def would_decide(self, upstream: str, mode: str, verdict: str) -> None:
        self._would.labels(upstream, mode, verdict).inc()

    def upstream(self, upstream: str, seconds: float) -> None:
        self._upstream.of(upstream).observe(seconds)

    def capture(self, upstream: str, seconds: float) -> None:
        self._capture.of(upstream).observe(seconds)

    def journal_write(self, seconds: float, new_entry: bool) -> None:
        self._journal.observe(seconds)
        if new_entry:
            self._entries.inc()

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
