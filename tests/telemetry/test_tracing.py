"""Tracing on: one trace from the caller's ``traceparent`` through the API request, the worker's
attempt and its stages to the model call, exported over OTLP/HTTP to a receiver on loopback, and the
provider's request naming the model call's span."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from tests.conftest import (
    InputFiles,
    api_with,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    worker_deps,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_errors import Disconnect
from tests.fakes.otlp import FakeOtlp, ReceivedSpan

CSV = "region,revenue\nnorth,1200\nsouth,980\n"
STAGES = ("fetching", "summarizing", "rendering", "storing")


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic, fake_otlp: FakeOtlp) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        anthropic_api_key="sk-ant-trace",
        anthropic_base_url=fake_anthropic.base_url,
        otel_exporter_otlp_endpoint=fake_otlp.endpoint,
    )


def caller_traceparent() -> tuple[str, str, str]:
    """A caller's own span, as a W3C header: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def run_traced_report(
    settings: Settings, inputs: InputFiles, renderer: PdfRenderer, headers: dict[str, str]
) -> dict[str, object]:
    """Submits one report with ``headers`` and runs it; returns its status once every span the API
    and the worker made has been exported (both shut down, which flushes their exporters)."""
    key = bearer(await create_key(settings, "tara", "pro"))
    async with api_with(settings) as api:
        accepted = await api.post(
            "/api/reports", json={"inputDataUrl": inputs.add("t.csv", CSV)}, headers={**key, **headers}
        )
        assert accepted.status_code == 202, accepted.text
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
        polled = await api.get(f"/api/reports/{accepted.json()['jobId']}", headers=key)
    status: dict[str, object] = polled.json()
    assert status["state"] == "completed", status
    return status


def the_one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def submit_trace(fake_otlp: FakeOtlp) -> list[ReceivedSpan]:
    """The spans of the trace the POST started (the GET that polled afterwards has its own)."""
    request = the_one(fake_otlp.spans, "POST /api/reports")
    return [span for span in fake_otlp.spans if span.trace_id == request.trace_id]


async def test_one_trace_runs_from_the_callers_traceparent_through_the_worker_stages_to_the_model_call(
    settings: Settings, inputs: InputFiles, renderer: PdfRenderer, fake_otlp: FakeOtlp
) -> None:
    header, trace_id, caller_span = caller_traceparent()
    status = await run_traced_report(settings, inputs, renderer, {"traceparent": header})
    spans = submit_trace(fake_otlp)
    assert {span.trace_id for span in spans} == {trace_id}
    request = the_one(spans, "POST /api/reports")
    assert (request.parent_id, request.kind, request.service) == (caller_span, "SERVER", "report-service-api")
    assert request.attributes["http.route"] == "/api/reports"
    assert request.attributes["http.response.status_code"] == 202
    job = the_one(spans, "generate_report")
    assert (job.parent_id, job.kind, job.service) == (request.span_id, "CONSUMER", "report-service-worker")
    assert job.attributes["report_service.job_id"] == status["jobId"]
    assert job.attributes["report_service.report_id"] == status["reportId"]
    stages = {name: the_one(spans, f"stage {name}") for name in STAGES}
    assert {stage.parent_id for stage in stages.values()} == {job.span_id}
    model = the_one(spans, f"chat {settings.model_pro}")
    assert (model.parent_id, model.kind) == (stages["summarizing"].span_id, "CLIENT")
    result = status["result"]
    assert isinstance(result, dict)
    assert model.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": settings.model_pro,
        "gen_ai.request.max_tokens": settings.max_output_tokens,
        "gen_ai.response.model": result["model"],
        "gen_ai.usage.input_tokens": result["inputTokens"],
        "gen_ai.usage.output_tokens": result["outputTokens"],
    }
    assert all(span.status != "ERROR" for span in spans)


async def test_the_provider_request_carries_a_traceparent_naming_the_model_call_span(
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_otlp: FakeOtlp,
    fake_anthropic: FakeAnthropic,
) -> None:
    header, trace_id, _ = caller_traceparent()
    await run_traced_report(settings, inputs, renderer, {"traceparent": header})
    model = the_one(submit_trace(fake_otlp), f"chat {settings.model_pro}")
    (call,) = fake_anthropic.calls
    version, sent_trace, sent_span, flags = call.headers["traceparent"].split("-")
    assert (version, sent_trace, sent_span, flags) == ("00", trace_id, model.span_id, "01")


@pytest.mark.parametrize(
    "headers",
    [{}, {"traceparent": "00-not-a-trace-01"}, {"traceparent": f"00-{'0' * 32}-{'1' * 16}-01"}],
    ids=["no traceparent", "malformed", "all-zero trace id"],
)
async def test_without_a_valid_traceparent_the_request_starts_a_trace_the_job_continues(
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_otlp: FakeOtlp,
    headers: dict[str, str],
) -> None:
    await run_traced_report(settings, inputs, renderer, headers)
    spans = submit_trace(fake_otlp)
    request = the_one(spans, "POST /api/reports")
    assert request.parent_id == "" and request.trace_id != "0" * 32
    assert the_one(spans, "generate_report").parent_id == request.span_id
    assert {f"stage {name}" for name in STAGES} <= {span.name for span in spans}


async def test_a_failing_stage_marks_its_span_and_the_attempt_failed_with_the_error_type_only(
    settings: Settings, inputs: InputFiles, renderer: PdfRenderer, fake_otlp: FakeOtlp
) -> None:
    key = bearer(await create_key(settings, "tara", "pro"))
    missing = inputs.add("gone.csv", CSV).replace("gone.csv", "never-there.csv?sig=SECRET-SIGNATURE")
    async with api_with(settings) as api:
        accepted = await api.post("/api/reports", json={"inputDataUrl": missing}, headers=key)
        assert accepted.status_code == 202, accepted.text
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
    spans = submit_trace(fake_otlp)
    fetching = [span for span in spans if span.name == "stage fetching"]  # a 404 is not retried
    jobs = [span for span in spans if span.name == "generate_report"]
    assert len(fetching) == len(jobs) == 1
    for span in fetching + jobs:
        assert span.status == "ERROR" and span.attributes["error.type"] == "InputRejected"
    assert "SECRET-SIGNATURE" not in repr(spans)


async def test_a_retried_attempt_stays_in_the_trace_and_a_cut_model_call_shows_what_it_billed(
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_otlp: FakeOtlp,
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.fail_next(Disconnect(after_chunks=3))  # the first answer is cut mid-stream
    header, trace_id, _ = caller_traceparent()
    await run_traced_report(settings, inputs, renderer, {"traceparent": header})
    spans = submit_trace(fake_otlp)
    request = the_one(spans, "POST /api/reports")
    attempts = sorted(
        (span for span in spans if span.name == "generate_report"),
        key=lambda span: int(str(span.attributes["report_service.attempt"])),
    )
    assert [span.parent_id for span in attempts] == [request.span_id] * 2
    assert [span.status for span in attempts] == ["ERROR", "UNSET"]
    cut, answered = sorted(
        (span for span in spans if span.name.startswith("chat ")), key=lambda span: span.status != "ERROR"
    )
    assert (cut.status, cut.attributes["error.type"]) == ("ERROR", "ProviderUnavailable")
    assert int(str(cut.attributes["gen_ai.usage.input_tokens"])) > 0
    assert int(str(cut.attributes["gen_ai.usage.output_tokens"])) > 0  # what streamed before the cut
    assert "gen_ai.response.model" not in cut.attributes and answered.status == "UNSET"
    sent = [call.headers["traceparent"] for call in fake_anthropic.calls]
    assert sent == [f"00-{trace_id}-{cut.span_id}-01", f"00-{trace_id}-{answered.span_id}-01"]
