"""What the observer seam costs one proxied write, by what is switched on.

    .venv/bin/python bench/observe_cost.py [--calls 50000] [--repeats 7]

One write as the pipeline reports it: begin, capture step (with the headers
propagated), journal intent, upstream step (propagated), journal outcome,
finish. Modes: ``no-op`` (``NO_OBSERVER``: the seam alone), ``default``
(tracing and access log off: what every gateway runs, metrics only),
``tracing`` (OpenTelemetry spans through the batch processor to an exporter
that drops them, so only the gateway-side cost is counted), ``access log``
(to a logger with a null handler). Prints the median microseconds per call.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable, Sequence

from gateway.metrics import Metrics
from gateway.observe import CAPTURE, JOURNAL, JOURNAL_OUTCOME, NO_OBSERVER, UPSTREAM, CallRecord
from gateway.observe.access import AccessLog
from gateway.observe.seam import Observer
from gateway.observe.timed import CallObserver

HEADERS = [("host", "api.example.com"), ("content-type", "application/json"),
           ("accept-encoding", "identity")]
AGENT_HEADERS = [(b"x-gateway-key", b"k"), (b"content-type", b"application/json")]


def one_write(observer: Observer) -> None:
    watch = observer.begin(AGENT_HEADERS)
    with watch.step(CAPTURE, "crm") as step:
        step.propagate(HEADERS)
    with watch.step(JOURNAL, "crm"):
        pass
    with watch.step(UPSTREAM, "crm") as step:
        step.propagate(HEADERS)
    with watch.step(JOURNAL_OUTCOME, "crm"):
        pass
    watch.finish(CallRecord("req", "bot", "crm", "PATCH", "/crm/items/1", "allow", 200))


def tracing_observer() -> tuple[CallObserver, Callable[[], None]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from gateway.observe.tracing import Tracing

    class Drop(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 16))
    return CallObserver(Metrics(), Tracing(provider)), provider.shutdown


def per_call_us(observer: Observer, calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        one_write(observer)
    return (time.perf_counter() - began) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    quiet = logging.getLogger("bench.access")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    quiet.setLevel(logging.INFO)
    traced, shutdown = tracing_observer()
    modes: list[tuple[str, Observer]] = [
        ("no-op seam", NO_OBSERVER),
        ("default (metrics)", CallObserver(Metrics())),
        ("+ access log", CallObserver(Metrics(), access=AccessLog(quiet))),
        ("+ tracing", traced),
    ]
    print(f"{'mode':<20}{'us per write (median of ' + str(args.repeats) + ')':>30}")
    for name, observer in modes:
        one_write(observer)
        median = statistics.median(per_call_us(observer, args.calls) for _ in range(args.repeats))
        print(f"{name:<20}{median:>30.2f}")
    shutdown()


if __name__ == "__main__":
    main()
