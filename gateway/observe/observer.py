"""The observer the gateway runs with: metrics always, tracing and the access log if asked.

``observer_for(settings, metrics)`` builds it at start. Nothing of
OpenTelemetry is imported unless tracing is on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.metrics import Metrics
from gateway.observe.access import AccessLog
from gateway.observe.config import tracing_wanted
from gateway.observe.timed import CallObserver
from gateway.settings import Settings


def observer_for(settings: Settings, metrics: Metrics,
                 environ: Mapping[str, str] | None = None) -> CallObserver:
    """The observer ``settings`` ask for; ValueError names a tracing setting that cannot work."""
    environ = os.environ if environ is None else environ
    tracing = None
    if tracing_wanted(settings.telemetry, environ):
        from gateway.observe.tracing import Tracing
        tracing = Tracing.start(settings.telemetry, environ)
    return CallObserver(metrics, tracing, AccessLog() if settings.access_log else None)
