"""The worker's pipeline through a real arq Worker (burst mode), real Redis, the real anthropic SDK
against the fake Anthropic server, inputs over real HTTP, and PDFs read back with pypdf."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from service.core.settings import Settings
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from tests.conftest import (
    InputFiles,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    submit,
    worker_deps,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.worker.support import CSV, pdf_text, run, status


@pytest.fixture
def settings(model_settings: Settings) -> Settings:
    """These jobs call the model: the fake Anthropic, through the real SDK."""
    return model_settings


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
    assert result["outputLimitReached"] is False

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


async def test_an_answer_cut_at_the_output_limit_says_so_in_the_result_and_the_pdf(
    api: httpx.AsyncClient,
    settings: Settings,
    inputs: InputFiles,
    renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:
    # Longer than max_tokens allows: the fake stops it there, with stop_reason "max_tokens".
    fake_anthropic.reply = lambda body: "## Findings\n\n" + "Revenue grew in every region. " * 1_000
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(settings, renderer)

    done = await status(api, key, job_id)
    assert done["state"] == "completed"
    result = done["result"]
    assert isinstance(result, dict)
    assert result["outputLimitReached"] is True
    assert result["outputTokens"] == settings.max_output_tokens
    pdf = await api.get(f"/api/reports/{job_id}/pdf", headers=key)
    text = " ".join(pdf_text(pdf.content).split())
    assert "ends here because the model reached its output limit" in text
    assert text.rindex("Revenue grew") < text.index("output limit")  # after the answer, at its end


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


async def test_stages_are_announced_in_order_with_rising_progress(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.chunk_delay, fake_anthropic.chunk_chars = 0.05, 200  # about 2.5 s of streaming
    fake_anthropic.reply = lambda body: "# Report\n\n" + "Revenue grew in every region. " * 300
    key = bearer(await create_key(settings, "alice", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        await run_burst_worker(settings, deps)
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    entries = await client.xrange(f"rs:job:{job_id}:events")
    await client.aclose()
    # The stream holds what a live reader saw: the start, each stage and rise, then the end.
    events = [fields["event"] for _, fields in entries]
    assert events[-1] == "completed" and set(events[:-1]) == {"progress", "text"}
    # The answer as it was written: deltas that join, at their offsets, into the whole report.
    written = ""
    for _, fields in entries:
        if fields["event"] == "text":
            piece = json.loads(fields["data"])
            assert piece["offset"] == len(written)
            written += piece["delta"]
    assert written == fake_anthropic.reply({}) and events.count("text") > 2
    snapshots = [json.loads(fields["data"]) for _, fields in entries[:-1] if fields["event"] == "progress"]
    stages = [snapshot["stage"] for snapshot in snapshots]
    # The start announces the first stage itself; each later one comes with the step that begins it.
    assert stages[:2] == ["fetching", "summarizing"] and stages[-3:] == ["rendering", "storing", "done"]
    assert stages.count("summarizing") > 2  # 30 rising towards 70 as the answer streams in
    progress = [snapshot["progress"] for snapshot in snapshots]
    assert progress == sorted(progress) and progress[0] == 10 and progress[-1] == 100
    assert all(30 <= s["progress"] < 70 for s in snapshots if s["stage"] == "summarizing")
    assert snapshots[-1] == {"progress": 100, "state": "completed", "stage": "done"}


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


async def test_an_offline_report_costs_nothing_in_the_usage(
    api: httpx.AsyncClient, redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    """``costUsd`` of ``GET /api/usage`` is what was spent: nothing for an offline report, though the
    job was submitted for a priced model; its tokens are counted as the job reports them."""
    offline = make_settings(redis_url, tmp_path / "data")
    key = bearer(await create_key(offline, "olly", "pro"))
    job_id = (await submit(api, key, inputs.add("sales.csv", CSV)))["jobId"]
    await run(offline, renderer, OfflineProvider(chunk_delay=0))
    result = (await status(api, key, job_id))["result"]
    assert isinstance(result, dict) and result["model"] == "offline" and result["costUsd"] == 0
    usage = (await api.get("/api/usage", headers=key)).json()
    assert (usage["reports"], usage["inputTokens"], usage["outputTokens"], usage["tokensUsed"]) == (
        1,
        result["inputTokens"],
        result["outputTokens"],
        result["tokensUsed"],
    )
    assert result["tokensUsed"] > 0 and usage["costUsd"] == 0
