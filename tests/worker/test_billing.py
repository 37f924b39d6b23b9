"""Money is counted where it is spent: every paid call in the ledger exactly once, whatever ended it,
and budgets that hold before the spend, not after it. The fake Anthropic bills as the API does
(input at the start of an answer, output as it streams), so usage can be compared with its bill."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.errors import Unavailable
from service.core.settings import Settings
from service.providers.prompt import minimal_call_tokens
from service.report.renderer import PdfRenderer
from service.store.calls import CallLedger
from service.store.limiter import Grant, LlmLimiter
from service.store.policies import budget_period
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

LONG_ANSWER = "# Report\n\n" + "Revenue grew in every region this quarter. " * 120  # ~5,000 characters


def paid(redis_url: str, tmp_path: Path, fake: FakeAnthropic, **overrides: Any) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=fake.base_url,
        **overrides,
    )


async def usage(api: httpx.AsyncClient, key: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get("/api/usage", headers=key)).json()
    return body


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_cancelling_mid_answer_counts_the_input_and_what_had_streamed(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.reply, fake_anthropic.chunk_delay = (lambda body: LONG_ANSWER), 0.02
    # The provider bills a cut answer when it sees the cut, after the worker has moved on: late by
    # design here, as it can be under load, so the bill is read once it is final (``settled``).
    fake_anthropic.settle_delay = 0.3
    settings = paid(redis_url, tmp_path, fake_anthropic)
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "fay", "free"))
        job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
        async with worker_deps(settings, renderer) as deps:
            worker = asyncio.create_task(run_burst_worker(settings, deps))

            async def streaming() -> bool:  # counted in the usage when the call closes
                return int(str((await status(api, key, job_id))["progress"])) > 32

            await until(streaming)
            assert (await api.delete(f"/api/reports/{job_id}", headers=key)).status_code == 200
            await asyncio.wait_for(worker, timeout=5)
            ledger = await CallLedger(deps.jobs._redis).entries(job_id)
        await fake_anthropic.settled()
        billed_input, billed_output = fake_anthropic.billed_tokens
        spent = await usage(api, key)
        assert (spent["reports"], spent["inputTokens"]) == (0, billed_input)
        # Counted from what had streamed: the fake may have sent one more chunk the worker never saw.
        assert 50 < spent["outputTokens"] <= billed_output <= spent["outputTokens"] + 8
        assert spent["tokensUsed"] == spent["inputTokens"] + spent["outputTokens"]
        assert spent["reservedTokens"] == 0
        assert spent["costUsd"] > 0
        [entry] = ledger.values()
        assert entry["outcome"] == "cancelled" and str(entry["request_id"]).startswith("req_")
        assert (entry["input"], entry["output"]) == (spent["inputTokens"], spent["outputTokens"])


async def test_a_free_key_looping_submit_and_cancel_is_stopped_by_its_budget(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.reply, fake_anthropic.chunk_delay = (lambda body: LONG_ANSWER), 0.02
    budget = 3 * minimal_call_tokens(1000)
    settings = paid(
        redis_url, tmp_path, fake_anthropic, budget_tokens_free=budget, max_output_tokens=1000,
        submissions_per_minute_free=0,
    )  # fmt: skip
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "mallory", "free"))
        source = inputs.add("a.csv", CSV)
        refused = None
        async with worker_deps(settings, renderer) as deps:
            for _ in range(30):
                answer = await api.post("/api/reports", json={"inputDataUrl": source}, headers=key)
                if answer.status_code == 402:
                    refused = answer.json()
                    break
                assert answer.status_code in (200, 202), answer.text
                job_id = answer.json()["jobId"]
                worker = asyncio.create_task(run_burst_worker(settings, deps))

                async def begun(job_id: str = job_id) -> bool:
                    state = await status(api, key, job_id)
                    return state["state"] == "failed" or int(str(state["progress"])) > 30

                await until(begun)
                await api.delete(f"/api/reports/{job_id}", headers=key)
                await asyncio.wait_for(worker, timeout=5)
        assert refused is not None and refused["error"] == "budget_exceeded"
        spent = await usage(api, key)
        assert spent["tokensUsed"] <= budget and spent["reports"] == 0
        await fake_anthropic.settled()  # the last cancelled answer is billed when the fake sees the cut
        billed_input, billed_output = fake_anthropic.billed_tokens
        assert spent["inputTokens"] == billed_input > 0  # every call started was counted
        assert spent["outputTokens"] <= billed_output <= spent["outputTokens"] + 8 * fake_anthropic.call_count


async def test_queued_jobs_cannot_overrun_the_budget_each_call_reserves_its_worst_case_first(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    big_input = "region,revenue\n" + "north,1200\n" * 2000  # ~5,500 input tokens as the fake counts them
    per_call_worst = 5_600 + 2_000
    budget = int(per_call_worst * 2.5)  # room for two calls' worst cases, not three
    settings = paid(
        redis_url,
        tmp_path,
        fake_anthropic,
        budget_tokens_pro=budget,
        max_output_tokens=2_000,
        worker_concurrency=5,
    )
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "quinn", "pro"))
        job_ids = [(await submit(api, key, inputs.add(f"{n}.csv", big_input)))["jobId"] for n in range(5)]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
        finals = [await status(api, key, job_id) for job_id in job_ids]
        completed = [s for s in finals if s["state"] == "completed"]
        refused = [s for s in finals if s["state"] == "failed"]
        assert len(completed) >= 2 and len(completed) + len(refused) == 5 and refused
        assert all("budget" in str(s["error"]) for s in refused)
        assert fake_anthropic.call_count == len(completed)  # a refused job never reached the provider
        spent = await usage(api, key)
        assert spent["tokensUsed"] <= budget and spent["reservedTokens"] == 0
        assert spent["tokensUsed"] == sum(fake_anthropic.billed_tokens)


class FlakyLedger(CallLedger):
    """The real ledger, failing as a Redis blip would: every record while the answer streams, and
    the first ``save_failures`` saves of the answer."""

    def __init__(self, inner: CallLedger, save_failures: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.save_failures = save_failures
        self.streaming_failures = 0

    async def record(self, call: Any, input_tokens: int, output_tokens: int, **kw: Any) -> bool:
        if not kw.get("outcome"):
            self.streaming_failures += 1
            raise Unavailable("blip")
        if kw.get("checkpoint") is not None and self.save_failures:
            self.save_failures -= 1
            raise Unavailable("blip")
        return await super().record(call, input_tokens, output_tokens, **kw)


class FlakyLimiter(LlmLimiter):
    def __init__(self, inner: LlmLimiter) -> None:
        self.__dict__.update(inner.__dict__)

    async def reconcile(self, grant: Grant, input_tokens: int, output_tokens: int) -> None:
        raise Unavailable("blip")


async def test_a_redis_blip_around_a_paid_answer_never_loses_it_nor_pays_twice(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.chunk_delay, fake_anthropic.chunk_chars = 0.01, 40
    settings = paid(redis_url, tmp_path, fake_anthropic)
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "rae", "pro"))
        job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
        async with worker_deps(settings, renderer) as deps:
            flaky = deps.calls = FlakyLedger(deps.calls, save_failures=2)
            assert deps.limiter is not None
            deps.limiter = FlakyLimiter(deps.limiter)
            await run_burst_worker(settings, deps)
        done = await status(api, key, job_id)
        assert done["state"] == "completed" and done["attempts"] == 1
        assert fake_anthropic.call_count == 1 and flaky.streaming_failures > 0 and flaky.save_failures == 0
        spent = await usage(api, key)
        assert (spent["inputTokens"], spent["outputTokens"]) == fake_anthropic.billed_tokens


async def test_usage_counts_cache_reads_and_writes_once_each_and_prices_them_as_the_bill_does(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.prompt_cache.minimum = lambda model: 0  # the fake caches the short system prompt
    settings = paid(
        redis_url, tmp_path, fake_anthropic, prompt_cache_min_tokens=0, prompt_cache_min_tokens_haiku=0,
        worker_concurrency=1,
    )  # fmt: skip
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "cai", "pro"))
        job_ids = [(await submit(api, key, inputs.add(f"{n}.csv", CSV)))["jobId"] for n in range(3)]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
        results = [(await status(api, key, job_id))["result"] for job_id in job_ids]
        spent = await usage(api, key)
    bill = fake_anthropic.bill.tokens("realtime")
    assert (
        bill.cache_write_tokens > 0 and bill.cache_read_tokens == 2 * bill.cache_write_tokens
    )  # one write, two reads
    assert (spent["cacheReadTokens"], spent["cacheWriteTokens"]) == (
        bill.cache_read_tokens,
        bill.cache_write_tokens,
    )
    assert (spent["inputTokens"], spent["outputTokens"]) == fake_anthropic.billed_tokens
    assert spent["reports"] == 3 and all(isinstance(r, dict) for r in results)
    reads = sum(r["cacheReadTokens"] for r in results)  # type: ignore[index]
    assert reads == spent["cacheReadTokens"]
    # Each kind of token at its own price: a read at a tenth of the input price, a write at 1.25x.
    assert spent["costUsd"] == pytest.approx(fake_anthropic.bill.usd("realtime"), abs=2e-6)
    assert spent["costUsd"] == pytest.approx(sum(r["costUsd"] for r in results), abs=2e-6)  # type: ignore[index]


async def test_an_offline_report_is_counted_in_tokens_at_no_cost(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    """No provider was paid: the ledger prices the offline provider's call at zero, whatever model
    the job was submitted for, and still counts the tokens its result reports."""
    settings = make_settings(redis_url, tmp_path / "data")  # no API key: the offline provider
    assert settings.offline and settings.model_pro.startswith("claude-")  # a priced model's job
    async with api_with(settings) as api:
        key = bearer(await create_key(settings, "ona", "pro"))
        job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
            counted = await deps.jobs.usage("ona", budget_period(settings))
            for model in (settings.model_pro, "offline"):  # nor in the provider's cost metrics
                assert deps.metrics.pending("llm_cost_usd_total", model=model) == 0
                assert deps.metrics.pending("llm_tokens_total", model=model, kind="output") == 0
        done = await status(api, key, job_id)
    assert done["state"] == "completed" and isinstance(done["result"], dict)
    result = done["result"]
    assert (counted["input_tokens"], counted["output_tokens"]) == (
        result["inputTokens"],
        result["outputTokens"],
    )
    assert result["outputTokens"] > 0 and result["costUsd"] == 0
    assert counted["cost_nusd"] == 0
