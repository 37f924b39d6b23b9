"""How the pipeline fails, retries and resumes: missing inputs, provider errors and limits, attempts,
timeouts, the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service.core.errors import TransientJobError
from service.core.settings import Settings
from service.report.document import ReportDocument
from service.report.renderer import PdfRenderer
from tests.conftest import (
    InputFiles,
    bearer,
    create_key,
    make_settings,
    submit,
    worker_deps,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_errors import (
    invalid_api_key,
    overloaded,
    rate_limited,
    server_error,
    tier_spend_limit_reached,
)
from tests.worker.support import CSV, run, run_once, status


@pytest.fixture
def settings(model_settings: Settings) -> Settings:
    """These jobs call the model: the fake Anthropic, through the real SDK."""
    return model_settings


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
        assert await run_once(deps, job_id) == "completed"
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
