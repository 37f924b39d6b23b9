"""Scheduling under pressure: pro before free, no starvation, a cap per user across workers,
submission rate limits and token budgets at the door."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.core.settings import Settings
from service.providers.base import ReportAnswer, ReportRequest
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from service.store.connection import open_redis
from service.store.jobs import JobStore
from tests.conftest import (
    InputFiles,
    LiveServer,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    worker_deps,
)


class SlowProvider:
    """Answers after ``delay``, noting how many calls run at once per user (the input's name prefix)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.running: dict[str, int] = defaultdict(int)
        self.most: dict[str, int] = defaultdict(int)
        self.order: list[str] = []

    async def count_input_tokens(self, request: ReportRequest) -> int:
        return len(request.input_text) // 4

    async def write_report(self, request: ReportRequest, on_output: object = None) -> ReportAnswer:
        user = request.input_name.split("-")[0]
        self.order.append(request.input_name)
        self.running[user] += 1
        self.most[user] = max(self.most[user], self.running[user])
        await asyncio.sleep(self.delay)
        self.running[user] -= 1
        return ReportAnswer(text="# Report\n\nFine.", model="slow", input_tokens=10, output_tokens=5)


async def post(api: httpx.AsyncClient, key: dict[str, str], url: str) -> httpx.Response:
    return await api.post("/api/reports", json={"inputDataUrl": url}, headers=key)


async def api_for(settings: Settings) -> tuple[LiveServer, httpx.AsyncClient]:
    live = await LiveServer(create_app(settings, configure_logs=False)).__aenter__()
    return live, httpx.AsyncClient(base_url=live.url, timeout=10)


@pytest.fixture
def one_slot(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data", worker_concurrency=1, priority_pro_lead_seconds=5)


async def test_waiting_pro_jobs_start_before_waiting_free_jobs(
    one_slot: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    live, api = await api_for(one_slot)
    pro, free = (
        bearer(await create_key(one_slot, "p", "pro")),
        bearer(await create_key(one_slot, "f", "free")),
    )
    for name, key in (("f-1", free), ("f-2", free), ("p-1", pro), ("p-2", pro)):
        assert (await post(api, key, inputs.add(f"{name}.csv", "x\n1\n"))).status_code == 202
    provider = SlowProvider(0)
    async with worker_deps(one_slot, renderer, provider) as deps:
        await run_burst_worker(one_slot, deps)
    assert provider.order == ["p-1.csv", "p-2.csv", "f-1.csv", "f-2.csv"]
    await api.aclose()
    await live.__aexit__()


async def test_a_free_job_is_never_passed_by_pro_jobs_submitted_after_the_lead(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    settings = make_settings(
        redis_url, tmp_path / "data", worker_concurrency=1, priority_pro_lead_seconds=0.3
    )
    live, api = await api_for(settings)
    pro, free = (
        bearer(await create_key(settings, "p", "pro")),
        bearer(await create_key(settings, "f", "free")),
    )
    await post(api, free, inputs.add("f-old.csv", "x\n1\n"))
    await asyncio.sleep(0.4)  # longer than the lead: no later pro job may overtake it
    await post(api, pro, inputs.add("p-new.csv", "x\n1\n"))
    provider = SlowProvider(0)
    async with worker_deps(settings, renderer, provider) as deps:
        await run_burst_worker(settings, deps)
    assert provider.order == ["f-old.csv", "p-new.csv"]
    await api.aclose()
    await live.__aexit__()


async def test_a_users_burst_is_capped_across_two_workers_and_spends_no_attempts(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    settings = make_settings(redis_url, tmp_path / "data", worker_concurrency=4, user_max_active_free=2)
    live, api = await api_for(settings)
    hog, other = (
        bearer(await create_key(settings, "hog", "free")),
        bearer(await create_key(settings, "ann", "free")),
    )
    job_ids = [(await post(api, hog, inputs.add(f"hog-{i}.csv", "x\n1\n"))).json()["jobId"] for i in range(8)]
    job_ids.append((await post(api, other, inputs.add("ann-1.csv", "x\n1\n"))).json()["jobId"])
    provider = SlowProvider(0.3)
    async with (
        worker_deps(settings, renderer, provider) as one,
        worker_deps(settings, renderer, provider) as two,
    ):
        await asyncio.gather(run_burst_worker(settings, one), run_burst_worker(settings, two))
    assert provider.most["hog"] == 2  # never more than the cap, though 8 slots were free
    assert provider.order.index("ann-1.csv") < 3  # the other user did not wait behind the burst
    client = open_redis(redis_url, fail_fast=False)
    records = [await JobStore(client).get(job_id) for job_id in job_ids]
    await client.aclose()
    assert all(r is not None and (r["state"], r["attempts"]) == ("completed", "1") for r in records)
    await api.aclose()
    await live.__aexit__()


async def test_submitting_too_fast_is_429_with_retry_after_but_replays_pass(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path / "data", submissions_per_minute_free=4)  # a burst of 1
    live, api = await api_for(settings)
    key = bearer(await create_key(settings, "fast", "free"))
    body = {"inputDataUrl": "https://example.com/a.csv", "idempotencyKey": "first-one"}
    assert (await api.post("/api/reports", json=body, headers=key)).status_code == 202
    limited = await post(api, key, "https://example.com/b.csv")
    assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 15
    assert (await api.post("/api/reports", json=body, headers=key)).status_code == 200  # a retry is safe
    other = bearer(await create_key(settings, "calm", "free"))
    assert (await post(api, other, "https://example.com/c.csv")).status_code == 202  # per user
    await api.aclose()
    await live.__aexit__()


async def test_a_spent_budget_is_402_and_reservations_come_back(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    settings = make_settings(
        redis_url, tmp_path / "data", budget_tokens_free=20_000, budget_reserve_tokens=12_000
    )
    live, api = await api_for(settings)
    key = bearer(await create_key(settings, "thrifty", "free"))
    assert (await post(api, key, inputs.add("a.csv", "x\n1\n"))).status_code == 202
    usage = (await api.get("/api/usage", headers=key)).json()
    assert (usage["reservedTokens"], usage["budgetRemaining"]) == (12_000, 8_000)
    refused = await post(api, key, inputs.add("b.csv", "x\n1\n"))
    assert (refused.status_code, refused.json()["error"]) == (402, "budget_exceeded")
    async with worker_deps(settings, renderer, OfflineProvider(chunk_delay=0)) as deps:
        await run_burst_worker(settings, deps)
    usage = (await api.get("/api/usage", headers=key)).json()
    assert usage["reservedTokens"] == 0 and usage["reports"] == 1
    assert usage["budgetRemaining"] == 20_000 - usage["tokensUsed"]
    assert (await post(api, key, inputs.add("c.csv", "x\n1\n"))).status_code == 202
    await api.aclose()
    await live.__aexit__()
