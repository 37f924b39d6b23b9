"""The standard OpenTelemetry variables, read from the environment as the specification defines them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.core.settings import Settings


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example/base/"},
            "https://otel.example/base/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"}, "http://c:4318/custom"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/t",
            },
            "http://b/t",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"}, None),
    ],
    ids=["unset", "empty", "base", "base with a path", "traces only", "traces wins", "sdk disabled"],
)
def test_the_traces_endpoint_follows_the_opentelemetry_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], endpoint: str | None
) -> None:
    assert settings_from(monkeypatch, **env).traces_endpoint == endpoint


@pytest.mark.parametrize("value", ["collector:4317", "grpc://collector:4317", "localhost"])
def test_an_endpoint_that_is_not_an_http_url_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(ValidationError, match="OTLP/HTTP"):
        settings_from(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=value)


def test_the_service_name_is_read_from_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, OTEL_SERVICE_NAME="billing-reports")
    assert settings.otel_service_name == "billing-reports"
