"""The attack on tighter reservations: a free key submits many jobs at once whose answers run as
long as the model allows, after the recent answers of its model were short (a low 95th percentile).
Near the end of the budget calls run with their max_tokens cut to what they hold, so none can
spend past it: ``tokensUsed`` stays within the budget, and equals what the provider billed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from service.report.renderer import PdfRenderer
from service.store import names
from service.store.calls import OUTPUT_SAMPLE_LEAST
from tests.conftest import (
    InputFiles,
    api_with,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    submit,
    worker_deps,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.worker.support import CSV, status

ENDLESS = "Every region grew, and here is why, at length. " * 2000  # always stopped by max_tokens
MAX_TOKENS = 1_500


async def short_recent_answers(redis_url: str, model: str) -> None:
    """What other users' answers of this model and plan taught the sample: 200 tokens each."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        slots = {str(slot): 200 for slot in range(OUTPUT_SAMPLE_LEAST)}
        await client.hset(names.output_sample(model, "free"), mapping=slots)
    finally:
        await client.aclose()


async def test_a_free_key_rushing_many_long_answers_cannot_overrun_its_budget(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.reply, fake_anthropic.chunk_delay = (lambda body: ENDLESS), 0.002
    budget = 9_000  # a few worst cases (input ~600 + 1,500), then what is left
    settings = make_settings(
        redis_url, tmp_path / "data", anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake_anthropic.base_url, budget_tokens_free=budget,
        max_output_tokens=MAX_TOKENS, worker_concurrency=12, user_max_active_free=0,
        budget_reserve_tokens=1,
    )  # fmt: skip
    await short_recent_answers(redis_url, settings.model_free)
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "mallory", "free"))
        job_ids = [(await submit(api, key, inputs.add(f"{n}.csv", CSV)))["jobId"] for n in range(12)]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
        finals = [await status(api, key, job_id) for job_id in job_ids]
        spent: dict[str, Any] = (await api.get("/api/usage", headers=key)).json()
    completed = [s for s in finals if s["state"] == "completed"]
    refused = [s for s in finals if s["state"] == "failed"]
    assert completed and refused and len(completed) + len(refused) == 12
    assert all(isinstance(s["error"], dict) and s["error"]["code"] == "budget_exceeded" for s in refused)
    sent = [int(call.body["max_tokens"]) for call in fake_anthropic.calls]
    assert len(sent) == len(completed)  # a refused job never reached the provider
    assert any(cut < MAX_TOKENS for cut in sent)  # the end of the budget ran calls with less
    assert spent["tokensUsed"] <= budget and spent["reservedTokens"] == 0
    assert spent["tokensUsed"] == sum(fake_anthropic.billed_tokens)


async def test_offline_reports_feed_no_sample_and_cost_no_command_for_it(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    settings = make_settings(redis_url, tmp_path / "data")  # no API key: the offline provider
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "olga", "pro"))
        job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
        assert (await status(api, key, job_id))["state"] == "completed"
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert [k async for k in client.scan_iter(f"{names.OUTPUT_SAMPLE_PREFIX}*")] == []
    finally:
        await client.aclose()
