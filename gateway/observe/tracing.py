"""OpenTelemetry tracing of agent calls (imported only when tracing is on).

Each agent call is a ``gateway.call`` span (a child of the agent's own span
when the agent sent a W3C ``traceparent``), with child spans
``gateway.capture``, ``gateway.journal`` and ``gateway.upstream``. The
capture and upstream requests carry their step's ``traceparent`` (replacing
the agent's), so the upstream's spans join the same trace. Spans go through
the SDK's batch processor to an OTLP/HTTP exporter, off the event loop;
``close()`` flushes them at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.observe.config import traces_endpoint
from gateway.observe.seam import CAPTURE, JOURNAL_OUTCOME, UPSTREAM, CallRecord, Step
from gateway.observe.timed import TimedStep, TimedWatch
from gateway.settings import TelemetrySettings

if TYPE_CHECKING:
    from types import TracebackType

    from gateway.observe.timed import CallObserver

DEFAULT_SERVICE = "agent-gateway"
_CONTEXT_HEADERS = ("traceparent", "tracestate")
_PROPAGATOR = TraceContextTextMapPropagator()
_SPAN_NAMES = {CAPTURE: "gateway.capture", UPSTREAM: "gateway.upstream",
               JOURNAL_OUTCOME: "gateway.journal"}
_KINDS = {CAPTURE: SpanKind.CLIENT, UPSTREAM: SpanKind.CLIENT}


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("gateway")

    @classmethod
    def start(cls, telemetry: TelemetrySettings, environ: Mapping[str, str]) -> Tracing:
        endpoint = traces_endpoint(telemetry, environ)  # ValueError before anything starts
        attributes = {}
        if telemetry.service_name or not environ.get("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = telemetry.service_name or DEFAULT_SERVICE
        sampler = None
        if telemetry.sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(telemetry.sample_ratio))
        provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
        exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(telemetry.headers) or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def watch(self, observer: CallObserver, headers: list[tuple[bytes, bytes]]) -> TracedWatch:
        return TracedWatch(observer, self, headers)

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)  # exports what is still batched


def _incoming(headers: list[tuple[bytes, bytes]]) -> Context | None:
    carrier = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        if key in _CONTEXT_HEADERS:
            carrier[key] = value.decode("latin-1")
    return _PROPAGATOR.extract(carrier) if carrier else None


class TracedStep(TimedStep):
    __slots__ = ("_name", "_watch", "_span")

    def __init__(self, observer: CallObserver, name: str, upstream: str,
                 watch: TracedWatch) -> None:
        super().__init__(observer.steps[name], upstream)
        self._name, self._watch = name, watch

    def __enter__(self) -> TracedStep:
        name = self._name
        self._span = self._watch.tracing.tracer.start_span(
            _SPAN_NAMES.get(name, "gateway." + name), context=self._watch.context,
            kind=_KINDS.get(name, SpanKind.INTERNAL), attributes={"gateway.upstream": self._upstream})
        if name == JOURNAL_OUTCOME:
            self._span.set_attribute("gateway.journal.phase", "outcome")
        super().__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        super().__exit__(kind, error, trace)
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, str(error)))
        self._span.end()

    def propagate(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(self._span))
        return [h for h in headers if h[0] not in _CONTEXT_HEADERS] + list(carrier.items())


class TracedWatch(TimedWatch):
    __slots__ = ("tracing", "span", "context")

    def __init__(self, observer: CallObserver, tracing: Tracing,
                 headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(observer)
        self.tracing = tracing
        self.span: Span = tracing.tracer.start_span("gateway.call", context=_incoming(headers),
                                                    kind=SpanKind.SERVER)
        self.context = set_span_in_context(self.span)

    def step(self, name: str, upstream: str) -> Step:
        return TracedStep(self._observer, name, upstream, self)

    def finish(self, record: CallRecord) -> None:
        super().finish(record)
        span = self.span
        span.set_attributes({
            "gateway.request_id": record.request_id, "gateway.agent": record.agent or "",
            "gateway.upstream": record.upstream, "gateway.decision": record.decision,
            "http.request.method": record.method, "url.path": record.path,
            "http.response.status_code": record.status})
        if record.status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {record.status}"))
        span.end()

    def end(self) -> None:
        self.span.set_attribute("gateway.operator_call", True)
        self.span.end()
