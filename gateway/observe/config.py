"""Whether tracing is on, and where spans go, from ``telemetry:`` and the ``OTEL_*`` variables.

Off by default. On when ``telemetry.tracing: true``; or, with ``tracing``
unset, when ``telemetry.endpoint`` is set or the environment configures an
OTLP exporter the standard way (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER=otlp``).
``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none`` turn it off.
Spans are exported with OTLP over HTTP (protobuf); other exporters and
protocols are refused at start with the variable named.

>>> tracing_wanted(TelemetrySettings(), {})
False
>>> tracing_wanted(TelemetrySettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
True
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.settings import TelemetrySettings

HTTP_PROTOBUF = "http/protobuf"


def _flag(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip().lower()


def tracing_wanted(telemetry: TelemetrySettings, environ: Mapping[str, str]) -> bool:
    if _flag(environ, "OTEL_SDK_DISABLED") == "true":
        return False
    if telemetry.tracing is not None:
        return telemetry.tracing
    exporter = _flag(environ, "OTEL_TRACES_EXPORTER")
    if exporter:
        return exporter != "none"
    return bool(telemetry.endpoint or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def traces_endpoint(telemetry: TelemetrySettings, environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL from the settings (None: the exporter reads ``OTEL_*``).

    As with ``OTEL_EXPORTER_OTLP_ENDPOINT``, a base URL gets ``/v1/traces``.
    ValueError for an exporter or protocol the gateway does not speak.
    """
    exporter = _flag(environ, "OTEL_TRACES_EXPORTER")
    if exporter and exporter not in ("otlp", "none"):
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter}: the gateway exports traces with "
                         "otlp (over HTTP) only")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = _flag(environ, name)
        if protocol and protocol != HTTP_PROTOBUF:
            raise ValueError(f"{name}={protocol}: the gateway exports OTLP as {HTTP_PROTOBUF} "
                             "(port 4318 on a collector), not gRPC")
        if protocol:
            break
    if telemetry.endpoint is None:
        return None
    endpoint = telemetry.endpoint.rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"telemetry.endpoint {telemetry.endpoint!r}: an http:// or https:// URL "
                         "of an OTLP/HTTP collector (e.g. http://127.0.0.1:4318)")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"
