"""How a batch job ends when it does not simply complete: cancelled before its batch is sent (nothing
sent, its hold back) or after (cancelled, and what the provider billed counted), an errored request
(only its job fails, or retries), an expired batch (realtime, or failed, by ``BATCH_EXPIRED``), and
a budget that cannot hold the request (failed before anything is sent)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store.metrics import MetricsStore
from service.telemetry.export import render
from service.worker.batch_driver import BatchDriver
from service.worker.resources import WorkerDeps
from tests.conftest import InputFiles, api_with, bearer, create_key, run_burst_worker, worker_deps
from tests.fakes.anthropic import FakeAnthropic
from tests.telemetry.test_metrics import samples, value
from tests.worker.batch_support import batch_settings, driving, run_with_driver, submit_batch, until
from tests.worker.support import CSV, run_once, status


async def usage(api: httpx.AsyncClient, key: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get("/api/usage", headers=key)).json()
    return body


async def lane_gauges(deps: WorkerDeps) -> tuple[float, float]:
    """The fleet's metrics as scraped: batch jobs waiting to be sent, provider batches followed."""
    body, _ = await render(MetricsStore(deps.jobs._redis))
    found = samples(body.decode())
    return value(found, "report_service_queue_depth", lane="batch"), value(
        found, "report_service_batches_open"
    )


async def sent(deps: WorkerDeps, job_ids: list[str]) -> None:
    """The jobs claimed, handed to the lane and sent in one batch."""
    for job_id in job_ids:
        assert await run_once(deps, job_id) == "active"
    await asyncio.sleep(deps.settings.batch_window_seconds)
    await BatchDriver(deps).send_due()


async def test_a_job_cancelled_before_the_window_sends_nothing_and_holds_nothing(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "fin", "free"))
        job_id = await submit_batch(api, key, inputs.add("a.csv", CSV))
        assert await run_once(deps, job_id) == "active"
        waiting = await status(api, key, job_id)
        assert (waiting["state"], waiting["stage"]) == ("active", "in_batch")
        assert (await usage(api, key))["reservedTokens"] > 0  # its worst case, held from the hand-off
        assert await lane_gauges(deps) == (1.0, 0.0)
        cancelled = await api.delete(f"/api/reports/{job_id}", headers=key)
        assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
        await run_with_driver(settings, deps)  # the window passes; the lane lets the job go
        assert fake_anthropic.batches.created == [] and fake_anthropic.call_count == 0
        spent = await usage(api, key)
        assert (spent["reservedTokens"], spent["tokensUsed"], spent["reports"]) == (0, 0, 0)
        assert await deps.jobs.queue_size() == 0
        assert await lane_gauges(deps) == (0.0, 0.0)


async def test_a_job_cancelled_after_its_batch_was_sent_is_cancelled_and_its_answer_still_counted(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic)
    fake_anthropic.batches.duration = 1.0
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "gus", "pro"))
        url = inputs.add("a.csv", CSV)
        gone, kept = [await submit_batch(api, key, url) for _ in range(2)]
        await sent(deps, [gone, kept])
        assert (await api.delete(f"/api/reports/{gone}", headers=key)).status_code == 200
        await run_with_driver(settings, deps)
        assert [(await status(api, key, job))["state"] for job in (gone, kept)] == ["cancelled", "completed"]
        assert (await api.get(f"/api/reports/{gone}/pdf", headers=key)).status_code == 409
        assert len(fake_anthropic.batches.created) == 1
        billed, spent = fake_anthropic.bill.tokens("batch"), await usage(api, key)
        # The provider answered both (a batch goes on for its other jobs): both are counted, once.
        assert spent["outputTokens"] == billed.output_tokens > 0 and spent["reports"] == 1
        billed_input = billed.input_tokens + billed.cache_read_tokens + billed.cache_write_tokens
        assert spent["inputTokens"] == billed_input
        assert spent["reservedTokens"] == 0


async def test_a_batch_whose_every_job_was_cancelled_is_cancelled_at_the_provider(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic)
    fake_anthropic.batches.duration = 30.0
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "hal", "pro"))
        url = inputs.add("a.csv", CSV)
        job_ids = [await submit_batch(api, key, url) for _ in range(2)]
        await sent(deps, job_ids)
        for job_id in job_ids:
            assert (await api.delete(f"/api/reports/{job_id}", headers=key)).status_code == 200
        async with driving(deps):

            async def settled() -> bool:  # the batch ended (cancelled: it would run 30 s) and settled
                closed = (await usage(api, key))["reservedTokens"] == 0
                return bool(
                    closed and await deps.jobs.queue_size() == 0 and await lane_gauges(deps) == (0, 0)
                )

            await until(settled)
        assert fake_anthropic.bill.tokens("batch").output_tokens == 0  # stopped before any was processed
        spent = await usage(api, key)
        assert (spent["tokensUsed"], spent["reports"]) == (0, 0)
        (batch,) = fake_anthropic.batches.created
        assert deps.batches is not None and (await deps.batches.status(batch)).cancel_requested


async def test_an_errored_request_fails_only_its_own_job(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, max_attempts=2)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "ida", "pro"))
        refused, overloaded, fine = [await submit_batch(api, key, inputs.add(f"{n}.csv", CSV)) for n in "abc"]
        fake_anthropic.batches.fail(refused, "invalid_request_error")
        fake_anthropic.batches.fail(overloaded, "overloaded_error")
        await run_with_driver(settings, deps)
        ends = [await status(api, key, job_id) for job_id in (refused, overloaded, fine)]
        assert [end["state"] for end in ends] == ["failed", "failed", "completed"]
        assert ends[0]["error"]["code"] == "provider_rejected"  # type: ignore[index]
        # Retried in a later batch (the second attempt), then given up.
        assert ends[1]["error"]["code"] == "provider_unavailable" and ends[1]["attempts"] == 2  # type: ignore[index]
        assert len(fake_anthropic.batches.created) == 2
        spent = await usage(api, key)
        assert (spent["reports"], spent["reservedTokens"]) == (1, 0)
        assert spent["outputTokens"] == fake_anthropic.bill.tokens("batch").output_tokens


async def expired_end(settings: Settings, renderer: PdfRenderer, inputs: InputFiles,
                      fake: FakeAnthropic) -> dict[str, Any]:  # fmt: skip
    fake.batches.duration, fake.batches.expires_after = 30.0, 0.3
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "joy", "pro"))
        job_id = await submit_batch(api, key, inputs.add("a.csv", CSV))
        await run_with_driver(settings, deps)
        return {**(await status(api, key, job_id)), "usage": await usage(api, key)}


async def test_a_job_whose_batch_expired_runs_in_the_realtime_lane(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic)  # BATCH_EXPIRED=realtime, the default
    end = await expired_end(settings, renderer, inputs, fake_anthropic)
    assert end["state"] == "completed" and end["result"]["lane"] == "realtime"
    assert fake_anthropic.call_count == 1 and len(fake_anthropic.batches.created) == 1
    assert end["usage"]["outputTokens"] == fake_anthropic.bill.tokens("realtime").output_tokens
    assert end["usage"]["reservedTokens"] == 0


async def test_a_job_whose_batch_expired_fails_when_so_configured(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, batch_expired="fail")
    end = await expired_end(settings, renderer, inputs, fake_anthropic)
    assert end["state"] == "failed" and end["error"]["code"] == "provider_unavailable"
    assert fake_anthropic.call_count == 0
    assert (end["usage"]["tokensUsed"], end["usage"]["reservedTokens"]) == (0, 0)


async def test_a_batch_job_the_budget_cannot_hold_fails_before_anything_is_sent(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> None:
    big = "region,revenue,units\n" + "north,1200.50,10\n" * 2000  # far more than the submission's hold
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, budget_tokens_free=8000,
                              max_output_tokens=1000)  # fmt: skip
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "kim", "free"))
        job_id = await submit_batch(api, key, inputs.add("big.csv", big))
        await run_burst_worker(settings, deps)
        end = await status(api, key, job_id)
        assert end["state"] == "failed" and end["error"]["code"] == "budget_exceeded"  # type: ignore[index]
        assert fake_anthropic.batches.created == [] and fake_anthropic.call_count == 0
        assert (await usage(api, key))["reservedTokens"] == 0
