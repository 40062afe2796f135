"""When tracing is on, and where spans go (``telemetry:`` and the standard ``OTEL_*``)."""

from __future__ import annotations

import pytest

from gateway.metrics import Metrics
from gateway.observe.config import traces_endpoint, tracing_wanted
from gateway.observe.observer import observer_for
from gateway.observe.timed import TimedWatch
from gateway.settings import Settings, TelemetrySettings

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


@pytest.mark.parametrize(("telemetry", "environ", "wanted"), [
    ({}, {}, False),
    ({}, ENDPOINT, True),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    ({}, {"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({}, {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ({}, {**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
    ({"tracing": False}, ENDPOINT, False),
    ({"tracing": True}, {}, True),
    ({"tracing": True}, {"OTEL_SDK_DISABLED": "true"}, False),
    ({"endpoint": "http://c:4318"}, {}, True),
])
def test_tracing_is_off_unless_asked(telemetry: dict[str, object], environ: dict[str, str],
                                     wanted: bool) -> None:
    assert tracing_wanted(TelemetrySettings.model_validate(telemetry), environ) is wanted


def test_endpoint_from_the_settings_gets_the_traces_path() -> None:
    assert traces_endpoint(TelemetrySettings(endpoint="http://c:4318/"), {}) == \
        "http://c:4318/v1/traces"
    assert traces_endpoint(TelemetrySettings(endpoint="http://c:4318/v1/traces"), {}) == \
        "http://c:4318/v1/traces"
    assert traces_endpoint(TelemetrySettings(), ENDPOINT) is None  # the exporter reads OTEL_*


@pytest.mark.parametrize(("telemetry", "environ", "message"), [
    ({}, {"OTEL_TRACES_EXPORTER": "zipkin"},
     "OTEL_TRACES_EXPORTER=zipkin: the gateway exports traces with otlp (over HTTP) only"),
    ({}, {**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the gateway exports OTLP as http/protobuf (port 4318 "
     "on a collector), not gRPC"),
    ({"endpoint": "collector:4318"}, {},
     "telemetry.endpoint 'collector:4318': an http:// or https:// URL of an OTLP/HTTP "
     "collector (e.g. http://127.0.0.1:4318)"),
])
def test_a_tracing_setting_that_cannot_work_is_named(telemetry: dict[str, object],
                                                     environ: dict[str, str],
                                                     message: str) -> None:
    settings = Settings(telemetry=telemetry)
    with pytest.raises(ValueError) as error:
        observer_for(settings, Metrics(), {**environ, "OTEL_TRACES_EXPORTER":
                                           environ.get("OTEL_TRACES_EXPORTER", "otlp")})
    assert str(error.value) == message


def test_off_means_a_timing_watch_and_no_tracing() -> None:
    observer = observer_for(Settings(), Metrics(), {})
    assert observer.tracing is None and observer.access is None
    assert type(observer.begin([])) is TimedWatch
