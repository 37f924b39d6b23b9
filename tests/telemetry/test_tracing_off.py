"""Tracing off costs nothing: a process that runs a whole report with tracing off has loaded no
OpenTelemetry SDK, exporter or protobuf, holds no tracer provider, exports nothing and sends no
``traceparent`` on, whatever the caller sent. Each case runs in a fresh interpreter (the probe), and
the same probe with tracing on shows it does see all of that when it is there."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.otlp import FakeOtlp
from tests.fakes.processes import ROOT, service_env

SDK_MODULES = ["google.protobuf", "opentelemetry.exporter", "opentelemetry.sdk", "requests"]


@dataclass(frozen=True)
class Probe:
    loaded: list[str]  # of SDK_MODULES, those the process had loaded
    tracer_providers: int  # SDK tracer providers alive in it
    global_provider: str | None  # OpenTelemetry's global one, by class name
    state: str  # the job's, at the end
    record_fields: list[str]  # the job record's field names


def run_probe(env: dict[str, str]) -> Probe:
    done = subprocess.run(
        [sys.executable, "-m", "tests.telemetry.tracing_probe"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    probe = Probe(**orjson.loads(done.stdout.strip().splitlines()[-1]))
    assert probe.state == "completed", probe
    return probe


@pytest.fixture
def env(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> dict[str, str]:
    model = {"ANTHROPIC_API_KEY": "sk-ant-probe", "ANTHROPIC_BASE_URL": fake_anthropic.base_url}
    return service_env(redis_url, tmp_path / "data", **model)


@pytest.mark.parametrize("switch", ["endpoint unset", "OTEL_SDK_DISABLED"])
def test_with_tracing_off_no_sdk_is_loaded_no_provider_exists_nothing_is_exported_or_propagated(
    env: dict[str, str], fake_anthropic: FakeAnthropic, fake_otlp: FakeOtlp, switch: str
) -> None:
    if switch == "OTEL_SDK_DISABLED":  # the endpoint set, and the standard switch turning it all off
        env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": fake_otlp.endpoint, "OTEL_SDK_DISABLED": "true"}
    probe = run_probe(env)
    assert (probe.loaded, probe.tracer_providers) == ([], 0)
    assert probe.global_provider == "ProxyTracerProvider"  # OpenTelemetry's default: none installed
    assert "traceparent" not in probe.record_fields
    (call,) = fake_anthropic.calls
    assert "traceparent" not in call.headers and "tracestate" not in call.headers
    assert fake_otlp.exports == 0


def test_the_probe_sees_the_sdk_providers_and_exports_when_tracing_is_on(
    env: dict[str, str], fake_anthropic: FakeAnthropic, fake_otlp: FakeOtlp
) -> None:
    probe = run_probe({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": fake_otlp.endpoint})
    assert probe.loaded == SDK_MODULES
    assert probe.tracer_providers == 2  # the API's and the worker's, neither installed globally
    assert probe.global_provider == "ProxyTracerProvider"
    assert "traceparent" in probe.record_fields
    (call,) = fake_anthropic.calls
    assert call.headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert fake_otlp.exports > 0 and {span.trace_id for span in fake_otlp.spans} >= {
        "0af7651916cd43dd8448eb211c80319c"
    }
