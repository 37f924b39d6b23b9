"""The batch lane end to end, in process: the real API, a burst worker and the fleet's batch driver,
the real anthropic SDK against the fake's Message Batches API, a real Redis. Batch jobs submitted
close together share one provider batch and finish as realtime jobs do, billed at half price."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.report.renderer import PdfRenderer
from tests.conftest import InputFiles, api_with, bearer, create_key, run_burst_worker, worker_deps
from tests.fakes.anthropic import FakeAnthropic
from tests.worker.batch_support import batch_settings, events, run_with_driver, submit_batch
from tests.worker.support import CSV, pdf_text, status


async def test_jobs_submitted_together_share_one_batch_and_finish_like_realtime_at_half_price(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "bea", "pro"))
        url = inputs.add("sales.csv", CSV)
        batch_ids = [await submit_batch(api, key, url) for _ in range(3)]
        realtime_id = await submit_batch(api, key, url, lane="realtime")
        await run_with_driver(settings, deps)
        (batch,) = fake_anthropic.batches.created  # one provider batch for the three
        assert sorted(custom_id for custom_id, _ in fake_anthropic.batches.requests(batch)) == sorted(
            batch_ids
        )
        assert fake_anthropic.call_count == 1  # the realtime job's own call, nothing else

        realtime = await status(api, key, realtime_id)
        for job_id in batch_ids:
            done = await status(api, key, job_id)
            assert (done["state"], done["stage"], done["progress"], done["error"]) == (
                "completed", "done", 100, None
            )  # fmt: skip
            result = done["result"]
            assert isinstance(result, dict) and isinstance(realtime["result"], dict)
            assert result["lane"] == "batch" and realtime["result"]["lane"] == "realtime"
            same = ("model", "inputTokens", "outputTokens", "tokensUsed")
            assert {k: result[k] for k in same} == {k: realtime["result"][k] for k in same}
            pdf = (await api.get(f"/api/reports/{job_id}/pdf", headers=key)).content
            assert "MARKER-pipeline" in pdf_text(pdf) or "Executive report" in pdf_text(pdf)
            stages = [
                data.get("stage") for name, data in await events(redis_url, job_id) if name == "progress"
            ]
            assert "in_batch" in stages and stages[-1] == "done"
            assert stages.index("in_batch") < stages.index("rendering")
            names = [name for name, _ in await events(redis_url, job_id)]
            assert names[-1] == "completed" and names.count("completed") == 1

        usage = (await api.get("/api/usage", headers=key)).json()
        batch_bill, realtime_bill = (
            fake_anthropic.bill.tokens("batch"),
            fake_anthropic.bill.tokens("realtime"),
        )
        assert usage["reports"] == 4
        billed_in = batch_bill.input_tokens + batch_bill.cache_read_tokens + batch_bill.cache_write_tokens
        realtime_in = realtime_bill.input_tokens + realtime_bill.cache_read_tokens
        realtime_in += realtime_bill.cache_write_tokens
        assert usage["inputTokens"] == billed_in + realtime_in
        assert usage["outputTokens"] == batch_bill.output_tokens + realtime_bill.output_tokens
        # Each batch report costs half of the realtime one: the ledger's prices follow the lane.
        assert usage["costUsd"] == pytest.approx(fake_anthropic.bill.usd(), rel=0.01)
        assert fake_anthropic.bill.usd("batch") == pytest.approx(3 * fake_anthropic.bill.usd("realtime") / 2)
        assert usage["budgetRemaining"] is None or usage["reservedTokens"] == 0
        # Each result prices its own answer, the cache's share apart: together they are the bill.
        results = [(await status(api, key, job_id))["result"] for job_id in [*batch_ids, realtime_id]]
        assert all(isinstance(r, dict) for r in results)
        costs = [r["costUsd"] for r in results]  # type: ignore[index]
        assert sum(costs) == pytest.approx(fake_anthropic.bill.usd(), rel=0.01)
        assert costs[0] == pytest.approx(costs[-1] / 2, rel=0.01)  # batch at half the realtime price
        cached = sum(r["cacheReadTokens"] + r["cacheWriteTokens"] for r in results)  # type: ignore[index]
        bill_cached = batch_bill.cache_read_tokens + batch_bill.cache_write_tokens
        assert cached == bill_cached + realtime_bill.cache_read_tokens + realtime_bill.cache_write_tokens


async def test_the_lane_is_part_of_the_idempotency_fingerprint(
    redis_url: str, tmp_path: Path, inputs: InputFiles, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic)
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "cy", "free"))
        url = inputs.add("a.csv", CSV)
        body = {"inputDataUrl": url, "idempotencyKey": "key-000001"}
        first = await api.post("/api/reports", json=body, headers=key)
        again = await api.post("/api/reports", json={**body, "lane": "realtime"}, headers=key)
        other = await api.post("/api/reports", json={**body, "lane": "batch"}, headers=key)
        bad = await api.post("/api/reports", json={"inputDataUrl": url, "lane": "slow"}, headers=key)
        assert (first.status_code, again.status_code, other.status_code) == (202, 200, 422)
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"


async def test_the_offline_provider_answers_batch_jobs_in_the_realtime_path(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, anthropic_api_key=None)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "dee", "free"))
        job_id = await submit_batch(api, key, inputs.add("a.csv", CSV))
        assert deps.batches is None
        await run_burst_worker(settings, deps)
        done = await status(api, key, job_id)
        assert done["state"] == "completed" and isinstance(done["result"], dict)
        assert done["result"]["lane"] == "realtime"
        assert fake_anthropic.batches.created == []


async def test_more_jobs_than_a_batch_holds_go_in_several_batches_each_job_in_one(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, batch_max_requests=2)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "eli", "pro"))
        url = inputs.add("a.csv", CSV)
        job_ids = [await submit_batch(api, key, url) for _ in range(5)]
        await run_with_driver(settings, deps)
        assert [(await status(api, key, job_id))["state"] for job_id in job_ids] == ["completed"] * 5
        sizes = [len(fake_anthropic.batches.requests(batch)) for batch in fake_anthropic.batches.created]
        sent = [custom_id for batch in fake_anthropic.batches.created
                for custom_id, _ in fake_anthropic.batches.requests(batch)]  # fmt: skip
        assert sorted(sent) == sorted(job_ids) and max(sizes) <= 2  # never more than a batch holds


async def test_batch_requests_count_their_cache_reads_and_writes_in_usage_at_batch_prices(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.prompt_cache.minimum = lambda model: 0  # the fake caches the short system prompt
    cached = {"prompt_cache_min_tokens": 0, "prompt_cache_min_tokens_haiku": 0}
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, **cached)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "cam", "pro"))
        job_ids = [await submit_batch(api, key, inputs.add(f"{n}.csv", CSV)) for n in range(3)]
        await run_with_driver(settings, deps)
        assert [(await status(api, key, job_id))["state"] for job_id in job_ids] == ["completed"] * 3
        spent = (await api.get("/api/usage", headers=key)).json()
    bill = fake_anthropic.bill.tokens("batch")
    assert bill.cache_read_tokens > 0 and bill.cache_write_tokens > 0
    assert (spent["cacheReadTokens"], spent["cacheWriteTokens"]) == (
        bill.cache_read_tokens,
        bill.cache_write_tokens,
    )
    assert spent["inputTokens"] == bill.input_tokens + bill.cache_read_tokens + bill.cache_write_tokens
    assert spent["costUsd"] == pytest.approx(fake_anthropic.bill.usd("batch"), abs=2e-6)
