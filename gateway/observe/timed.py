"""Watches that time each call and step, and the observer that feeds what they time to
the metrics, the access log and (through ``SpanMaker``) tracing.

Without tracing a call's watch is a ``TimedWatch``: two ``perf_counter``
reads per step and one per call, fed to the histograms.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from types import TracebackType
from typing import Protocol

from gateway.metrics import Metrics
from gateway.observe.seam import (
    CAPTURE,
    JOURNAL,
    JOURNAL_OUTCOME,
    UPSTREAM,
    CallRecord,
    Observer,
    Step,
    Watch,
)


class CallLog(Protocol):
    def write(self, record: CallRecord, seconds: float) -> None: ...


class SpanMaker(Protocol):
    """Tracing, as the observer uses it (``gateway.observe.tracing.Tracing``)."""

    def watch(self, observer: CallObserver, headers: list[tuple[bytes, bytes]]) -> Watch: ...

    async def close(self) -> None: ...


class TimedStep(Step):
    """``record``: what the observer does with a step of this name (looked up once)."""

    __slots__ = ("_record", "_upstream", "_began")

    def __init__(self, record: Callable[[str, float, bool], None], upstream: str) -> None:
        self._record, self._upstream = record, upstream

    def __enter__(self) -> TimedStep:
        self._began = perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._record(self._upstream, perf_counter() - self._began, kind is None)


class TimedWatch(Watch):
    __slots__ = ("_observer", "_began")

    def __init__(self, observer: CallObserver) -> None:
        self._observer = observer
        self._began = perf_counter()

    def step(self, name: str, upstream: str) -> Step:
        return TimedStep(self._observer.steps[name], upstream)

    def finish(self, record: CallRecord) -> None:
        self._observer.call_done(record, perf_counter() - self._began)


class CallObserver(Observer):
    def __init__(self, metrics: Metrics, tracing: SpanMaker | None = None,
                 access: CallLog | None = None) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.access = access
        self.steps: dict[str, Callable[[str, float, bool], None]] = {
            UPSTREAM: lambda upstream, seconds, ok: metrics.upstream(upstream, seconds),
            CAPTURE: lambda upstream, seconds, ok: metrics.capture(upstream, seconds),
            JOURNAL: lambda upstream, seconds, ok: metrics.journal_write(seconds, ok),
            JOURNAL_OUTCOME: lambda upstream, seconds, ok: metrics.journal_write(seconds, False),
        }

    def begin(self, headers: list[tuple[bytes, bytes]]) -> Watch:
        if self.tracing is None:
            return TimedWatch(self)
        return self.tracing.watch(self, headers)

    def step_done(self, name: str, upstream: str, seconds: float, ok: bool) -> None:
        self.steps[name](upstream, seconds, ok)

    def call_done(self, record: CallRecord, seconds: float) -> None:
        self.metrics.call(record.upstream, record.decision, seconds)
        if record.would_decide is not None:
            self.metrics.would_decide(record.upstream, record.mode or "", record.would_decide)
        if self.access is not None:
            self.access.write(record, seconds)

    async def close(self) -> None:
        if self.tracing is not None:
            await self.tracing.close()
