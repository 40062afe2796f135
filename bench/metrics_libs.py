"""Hot-path cost of the two metrics libraries the gateway could use.

    .venv/bin/python bench/metrics_libs.py [--calls 200000] [--repeats 7]

What one proxied write records: the decision counter, the journal-entries
counter, and five histogram observations (request, capture, two journal
writes, upstream), with the labels the gateway uses. Measured for
prometheus-client (labels() looked up per call, and children cached per label
set, as ``gateway.metrics`` does) and for OpenTelemetry metrics with its
Prometheus exporter (attributes dict per call, and attributes prebuilt).
Prints the median microseconds per call over ``--repeats`` runs, and the
cost of rendering /metrics once.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def prometheus_client_recorders() -> tuple[Callable[[], None], Callable[[], None], Callable[[], bytes]]:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    registry = CollectorRegistry()
    decisions = Counter("d", "d", ["upstream", "decision"], registry=registry)
    entries = Counter("j", "j", registry=registry)
    request = Histogram("r", "r", ["upstream", "decision"], buckets=BUCKETS, registry=registry)
    step = Histogram("s", "s", ["upstream"], buckets=BUCKETS, registry=registry)
    journal = Histogram("w", "w", buckets=BUCKETS, registry=registry)

    def naive() -> None:
        decisions.labels("crm", "allow").inc()
        entries.inc()
        request.labels("crm", "allow").observe(0.0012)
        step.labels("crm").observe(0.0003)
        journal.observe(0.0001)
        journal.observe(0.0001)
        step.labels("crm").observe(0.0004)

    cache: dict[tuple[str, str], tuple[object, object, object]] = {}

    def cached() -> None:
        children = cache.get(("crm", "allow"))
        if children is None:
            children = cache[("crm", "allow")] = (decisions.labels("crm", "allow"),
                                                 request.labels("crm", "allow"),
                                                 step.labels("crm"))
        count, req, stp = children
        count.inc()  # type: ignore[attr-defined]
        entries.inc()
        req.observe(0.0012)  # type: ignore[attr-defined]
        stp.observe(0.0003)  # type: ignore[attr-defined]
        journal.observe(0.0001)
        journal.observe(0.0001)
        stp.observe(0.0004)  # type: ignore[attr-defined]

    return naive, cached, lambda: generate_latest(registry)


def opentelemetry_recorders() -> tuple[Callable[[], None], Callable[[], None], Callable[[], bytes]]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from prometheus_client import REGISTRY, generate_latest
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[
        View(instrument_name="*", aggregation=ExplicitBucketHistogramAggregation(BUCKETS))])
    meter = provider.get_meter("bench")
    decisions = meter.create_counter("d")
    entries = meter.create_counter("j")
    request = meter.create_histogram("r", unit="s")
    step = meter.create_histogram("s", unit="s")
    journal = meter.create_histogram("w", unit="s")

    def naive() -> None:
        decisions.add(1, {"upstream": "crm", "decision": "allow"})
        entries.add(1)
        request.record(0.0012, {"upstream": "crm", "decision": "allow"})
        step.record(0.0003, {"upstream": "crm"})
        journal.record(0.0001)
        journal.record(0.0001)
        step.record(0.0004, {"upstream": "crm"})

    both, one = {"upstream": "crm", "decision": "allow"}, {"upstream": "crm"}

    def prebuilt() -> None:
        decisions.add(1, both)
        entries.add(1)
        request.record(0.0012, both)
        step.record(0.0003, one)
        journal.record(0.0001)
        journal.record(0.0001)
        step.record(0.0004, one)

    return naive, prebuilt, lambda: generate_latest(REGISTRY)


def per_call_us(record: Callable[[], None], calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        record()
    return (time.perf_counter() - began) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    baseline = statistics.median(per_call_us(lambda: None, args.calls)
                                 for _ in range(args.repeats))
    print(f"empty call: {baseline:.3f} us (subtracted below)")
    print(f"{'library':<34}{'variant':<18}{'us/write (median)':>18}{'render ms':>11}")
    for name, build in (("prometheus-client", prometheus_client_recorders),
                        ("opentelemetry-sdk + prometheus", opentelemetry_recorders)):
        naive, fast, render = build()
        for variant, record in (("per-call labels", naive), ("cached labels", fast)):
            record()  # first use creates the series
            median = statistics.median(per_call_us(record, args.calls)
                                       for _ in range(args.repeats)) - baseline
            began = time.perf_counter()
            render()
            render_ms = (time.perf_counter() - began) * 1000
            print(f"{name:<34}{variant:<18}{median:>18.3f}{render_ms:>11.3f}")


if __name__ == "__main__":
    main()
