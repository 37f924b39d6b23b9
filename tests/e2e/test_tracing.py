"""Tracing with the real processes, started by the Procfile's commands with the standard variables:
the caller's trace runs through the API process, the worker process and the model call, and each
process sends what it still holds when it is told to stop."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import InputFiles
from tests.e2e.support import Client, new_key
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.otlp import FakeOtlp
from tests.fakes.processes import ServiceProcess, service_env, start_api, start_worker, wait_for_worker_ready

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def env(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic, fake_otlp: FakeOtlp) -> dict[str, str]:
    return service_env(
        redis_url,
        tmp_path / "data",
        ANTHROPIC_API_KEY="sk-ant-trace-e2e",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=fake_otlp.endpoint,
        # No scheduled export while the test runs: what arrives was sent because the process stopped.
        OTEL_BSP_SCHEDULE_DELAY="600000",
        OTEL_SERVICE_NAME="reports-e2e",
    )


async def test_one_trace_spans_the_api_and_worker_processes_and_is_flushed_when_they_stop(
    env: dict[str, str],
    processes: list[ServiceProcess],
    inputs: InputFiles,
    fake_anthropic: FakeAnthropic,
    fake_otlp: FakeOtlp,
    tmp_path: Path,
) -> None:
    key = await new_key(env, "tess")
    api, url = await start_api(env, tmp_path / "logs")
    worker = start_worker(env, tmp_path / "logs")
    processes += [api, worker]
    await wait_for_worker_ready(worker)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        client = Client(http, key)
        client.headers["traceparent"] = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
        job_id = await client.submit(inputs.add("e.csv", "a,b\n1,2\n"))
        del client.headers["traceparent"]
        await client.wait_for(job_id, "completed")
    assert fake_otlp.exports == 0  # nothing sent on a schedule: the delay is ten minutes
    for process in (api, worker):
        process.signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then dies of the signal it was sent (-15); the worker exits 0.
        assert await process.wait(timeout=20) in (0, -signal.SIGTERM), process.log()
    (model,) = await fake_otlp.wait_for("chat claude-opus-4-7")
    spans = {span.name: span for span in fake_otlp.spans if span.trace_id == TRACE_ID}
    assert spans["POST /api/reports"].parent_id == CALLER_SPAN
    assert spans["generate_report"].parent_id == spans["POST /api/reports"].span_id
    assert spans["stage summarizing"].parent_id == spans["generate_report"].span_id
    assert model.parent_id == spans["stage summarizing"].span_id and model.trace_id == TRACE_ID
    assert {span.service for span in spans.values()} == {"reports-e2e"}
    (call,) = fake_anthropic.calls
    assert call.headers["traceparent"] == f"00-{TRACE_ID}-{model.span_id}-01"
