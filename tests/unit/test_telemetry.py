"""The `telemetry` config section and what happens when tracing is asked for but cannot run.
(Spans themselves are tested end to end against an OTLP receiver in tests/integration/test_signals.py.)"""

from __future__ import annotations

import sys

import pytest

from ledgergate.config import ConfigError, TelemetrySettings, parse_config
from ledgergate.gateway.telemetry import TelemetryUnavailable, Tracing


def test_telemetry_is_off_unless_an_endpoint_is_given() -> None:
    s = parse_config("listen: 127.0.0.1:1\n", env={})
    assert s.telemetry.otlp_endpoint is None
    on = parse_config('telemetry:\n  otlp_endpoint: "http://${OTEL_HOST}:4318"\n  service_name: gw-a\n'
                      '  headers: {Authorization: "Bearer ${OTEL_TOKEN}"}\n  sample_ratio: 0.25\n',
                      env={"OTEL_HOST": "collector", "OTEL_TOKEN": "t0k"})
    assert on.telemetry == TelemetrySettings(otlp_endpoint="http://collector:4318", service_name="gw-a",
                                             headers={"Authorization": "Bearer t0k"}, sample_ratio=0.25)


@pytest.mark.parametrize(("text", "expected"), [
    ("telemetry:\n  otlp_endpoint: collector:4317\n", "line 2: telemetry.otlp_endpoint: "),
    ("telemetry:\n  sample_ratio: 2\n", "line 2: telemetry.sample_ratio"),
    ("telemetry:\n  exporter: zipkin\n", "telemetry.exporter"),
])
def test_a_bad_telemetry_section_names_its_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert expected in str(info.value)


def test_tracing_asked_for_without_the_packages_refuses_to_start_saying_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the otel extra were not installed
    with pytest.raises(TelemetryUnavailable) as info:
        Tracing.start(TelemetrySettings(otlp_endpoint="http://127.0.0.1:4318"))
    assert "pip install 'ledgergate[otel]'" in str(info.value) and "telemetry.otlp_endpoint" in str(info.value)
