"""The worker's pipeline through a real arq Worker (burst mode), real Redis, the real anthropic SDK
against the fake Anthropic server, inputs over real HTTP, and PDFs read back with pypdf."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from pypdf import PdfReader

from service.core.errors import TransientJobError
from service.core.settings import Settings
from service.providers.offline.provider import OfflineProvider
from service.report.document import ReportDocument
from service.report.renderer import PdfRenderer
from service.store.jobs import JobStore
from service.worker.pipeline import run_report_job
from tests.conftest import (
    InputFiles,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    submit,
    worker_deps,
)
from tests.fakes.anthropic import (
    FakeAnthropic,
    invalid_api_key,
    overloaded,
    rate_limited,
    server_error,
    tier_spend_limit_reached,
)

CSV = "region,revenue,units\nnorth,1200.50,10\nsouth,980.25,8\nMARKER-pipeline,1500,12\n"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake_anthropic.base_url,
    )


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


async def status(api: httpx.AsyncClient, key: dict[str, str], job_id: str) -> dict[str, object]:
    response = await api.get(f"/api/reports/{job_id}", headers=key)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def run(settings: Settings, renderer: PdfRenderer, provider: OfflineProvider | None = None) -> None:
    async with worker_deps(settings, renderer, provider) as deps:
        await run_burst_worker(settings, deps)


async def test_a_report_goes_from_post_to_pdf_through_the_model(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)

    done = await status(api, key, job_id)
    assert (done["state"], done["progress"], done["stage"], done["attempts"]) == ("completed", 100, "done", 1)
    result = done["result"]
    assert isinstance(result, dict)
    assert result["pdfUrl"] == f"/api/reports/{job_id}/pdf"
    assert result["tokensUsed"] == result["inputTokens"] + result["outputTokens"] > 0
    assert done["startedAt"] and done["finishedAt"] and done["error"] is None

    pdf = await api.get(f"/api/reports/{job_id}/pdf", headers=key)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = pdf_text(pdf.content)
    assert "MARKER-pipeline" in text  # the fake model quotes the marker it found in the input
    assert settings.model_pro in text

    assert fake_anthropic.call_count == 1
    call = fake_anthropic.calls[0]
    assert call.body["model"] == settings.model_pro and call.api_key == "sk-ant-test"
    usage = (await api.get("/api/usage", headers=key)).json()
    assert (usage["reports"], usage["inputTokens"], usage["outputTokens"]) == (
        1,
        result["inputTokens"],
        result["outputTokens"],
    )


async def test_free_plan_jobs_use_the_free_model(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    key = bearer(await create_key(settings, "bob", "free"))
    (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)
    assert [call.body["model"] for call in fake_anthropic.calls] == [settings.model_free]


class RecordingJobStore(JobStore):
    """The real store, noting each stage and progress the pipeline announces."""

    def __init__(self, inner: JobStore) -> None:
        self.__dict__.update(inner.__dict__)
        self.announced: list[tuple[str, int]] = []

    async def advance(self, job_id: str, *, stage: str, progress: int) -> bool:
        self.announced.append((stage, progress))
        return await super().advance(job_id, stage=stage, progress=progress)


async def test_stages_are_announced_in_order_with_rising_progress(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.chunk_delay, fake_anthropic.chunk_chars = 0.03, 200  # about a second of streaming
    fake_anthropic.reply = lambda body: "# Report\n\n" + "Revenue grew in every region. " * 300
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        recording = RecordingJobStore(deps.jobs)
        deps.jobs = recording
        await run_burst_worker(settings, deps)
    stages = [stage for stage, _ in recording.announced]
    assert stages[0] == "fetching" and stages[-2:] == ["rendering", "storing"]
    assert stages.count("summarizing") > 2  # 30 rising towards 70 as the answer streams in
    progress = [value for _, value in recording.announced]
    assert progress == sorted(progress) and progress[0] == 10 and max(progress) == 90
    assert all(30 <= value < 70 for stage, value in recording.announced if stage == "summarizing")
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    entries = await client.xrange(f"rs:job:{job_id}:events")
    await client.aclose()
    # The stream holds what a live reader saw: each announcement, then the final progress and the end.
    names = [fields["event"] for _, fields in entries]
    assert names[-2:] == ["progress", "completed"] and names.count("progress") == len(recording.announced) + 2
    assert json.loads(entries[-2][1]["data"]) == {"progress": 100, "state": "completed", "stage": "done"}


async def test_offline_provider_writes_a_clearly_marked_report(
    api: httpx.AsyncClient, redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    offline = make_settings(redis_url, tmp_path / "data")  # the same storage the API fixture reads
    assert offline.offline
    key = bearer(await create_key(offline, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(offline, renderer, OfflineProvider(chunk_delay=0))
    done = await status(api, key, job_id)
    assert done["state"] == "completed"
    assert isinstance(done["result"], dict) and done["result"]["model"] == "offline"
    pdf = await api.get(f"/api/reports/{job_id}/pdf", headers=key)
    text = pdf_text(pdf.content).lower()
    assert "offline" in text and "region" in text


async def test_missing_input_fails_at_once_without_calling_the_model(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, f"{inputs.base_url}/files/missing.csv"))["jobId"]
    await run(settings, renderer)
    failed = await status(api, key, job_id)
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    assert isinstance(failed["error"], dict) and "404" in failed["error"]["reason"]
    assert failed["result"] is None
    assert fake_anthropic.call_count == 0


async def test_an_overloaded_provider_is_waited_out_without_spending_attempts_and_billed_once(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.fail_next(
        overloaded(retry_after="0"), rate_limited(retry_after="0"), overloaded(retry_after="0")
    )
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)
    done = await status(api, key, job_id)
    assert (done["state"], done["attempts"]) == ("completed", 1)  # 429 and 529 never cost an attempt
    assert fake_anthropic.call_count == 4  # three refusals, then the one answer that was paid for
    assert (await api.get("/api/usage", headers=key)).json()["reports"] == 1


async def test_a_rejected_request_fails_without_retrying(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.fail_next(invalid_api_key())
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)
    failed = await status(api, key, job_id)
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    assert isinstance(failed["error"], dict) and "401" in failed["error"]["reason"]
    assert "sk-ant-test" not in json.dumps(failed)
    assert fake_anthropic.call_count == 1


async def test_retries_stop_after_max_attempts(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.fail_next(*[server_error() for _ in range(settings.max_attempts)])
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)
    failed = await status(api, key, job_id)
    assert (failed["state"], failed["attempts"]) == ("failed", settings.max_attempts)
    assert (
        isinstance(failed["error"], dict)
        and f"after {settings.max_attempts} attempts" in failed["error"]["reason"]
    )
    assert fake_anthropic.call_count == settings.max_attempts


class FlakyRenderer(PdfRenderer):
    """Fails the first render as a crashed render process would, then renders normally."""

    def __init__(self, inner: PdfRenderer) -> None:
        self.inner, self.failures_left = inner, 1

    async def render(self, document: ReportDocument) -> bytes:
        if self.failures_left:
            self.failures_left -= 1
            raise TransientJobError("the render process died")
        return await self.inner.render(document)


async def test_a_retry_after_the_model_answered_resumes_from_the_checkpoint(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, FlakyRenderer(renderer))
    done = await status(api, key, job_id)
    assert (done["state"], done["attempts"]) == ("completed", 2)
    assert fake_anthropic.call_count == 1
    assert inputs.hits["sales.csv"] == 1  # the input was not fetched again either


async def test_a_job_running_past_the_timeout_is_retried_then_fails(
    api: httpx.AsyncClient, redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    impatient = make_settings(
        redis_url, tmp_path / "t", anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake_anthropic.base_url, job_timeout_seconds=0.5, max_attempts=2,
    )  # fmt: skip
    fake_anthropic.first_byte_delay = 2.0
    key = bearer(await create_key(impatient, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(impatient, renderer)
    failed = await status(api, key, job_id)
    assert (failed["state"], failed["attempts"]) == ("failed", 2)
    assert isinstance(failed["error"], dict) and "JOB_TIMEOUT_SECONDS" in failed["error"]["reason"]


async def test_a_finished_job_started_again_does_nothing(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)
    async with worker_deps(settings, renderer) as deps:
        assert await run_report_job(deps, job_id) == "completed"
    assert fake_anthropic.call_count == 1
    assert (await api.get("/api/usage", headers=key)).json()["reports"] == 1


async def test_a_spend_limit_429_fails_at_once_and_is_never_retried(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.fail_next(tier_spend_limit_reached(), tier_spend_limit_reached())
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)
    failed = await status(api, key, job_id)
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    assert isinstance(failed["error"], dict) and "spend" in failed["error"]["reason"].lower()
    assert fake_anthropic.call_count == 1
