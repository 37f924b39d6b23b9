"""Retention per user: one tenant's volume never shortens another's, failed and cancelled jobs are
capped too, a job cancelled before it ran goes soon, and an evicted job still answers its replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.connection import open_redis
from service.store.job_types import NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id
from tests.conftest import api_with, bearer, create_key, make_settings
from tests.store.support import cancel as cancel_job
from tests.store.support import claim
from tests.store.support import complete as complete_job
from tests.store.support import fail as fail_job

RESULT = {"model": "m", "inputTokens": 10, "outputTokens": 5, "tokensUsed": 15}
OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=60_000)
CAP = Retention(seconds=3600, count=3)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def submitted(jobs: JobStore, user: str, name: str) -> str:
    job_id = derive_job_id(user, name)
    new = NewJob(job_id, user, "pro", "https://x/y.csv", "m", "fp")
    outcome = await jobs.submit(new, OPEN, keep_ms=0, score_ms=1)
    assert outcome.kind == "created"
    return job_id


async def completed(jobs: JobStore, user: str, name: str, cap: Retention = CAP) -> str:
    job_id = await submitted(jobs, user, name)
    await finish(jobs, job_id, cap)
    return job_id


async def finish(jobs: JobStore, job_id: str, cap: Retention = CAP) -> None:
    assert (await claim(jobs, job_id, START)).proceed
    assert await complete_job(jobs, job_id, RESULT, cap, pdf_key="reports/x.pdf", period="2026-11")


async def whole(redis: Redis, job_id: str) -> bool:
    record: dict[str, str] = await redis.hgetall(names.job(job_id))  # type: ignore[misc]
    return bool(record) and "evicted" not in record


async def test_one_tenants_volume_never_evicts_another_users_jobs(redis: Redis) -> None:
    jobs = JobStore(redis)
    quiet = await completed(jobs, "quiet", "only-one")
    busy = [await completed(jobs, "busy", f"job-{n}") for n in range(10)]
    assert [await whole(redis, job_id) for job_id in busy] == [False] * 7 + [True] * 3
    assert await whole(redis, quiet)


async def test_failed_and_cancelled_jobs_are_capped_per_user_too(redis: Redis) -> None:
    jobs = JobStore(redis)
    ended = []
    for n in range(6):
        job_id = await submitted(jobs, "flaky", f"job-{n}")
        if n % 2:
            assert await cancel_job(jobs, job_id, CAP, queued_seconds=600) == "queued"
        else:
            assert (await claim(jobs, job_id, START)).proceed
            assert await fail_job(jobs, job_id, "broken input", CAP, code="input_rejected")
        ended.append(job_id)
    assert sum([await whole(redis, job_id) for job_id in ended]) == 3
    assert await redis.zcard(names.user_finished("flaky", "ended")) == 3


async def test_a_job_cancelled_before_it_ran_is_kept_only_briefly(redis: Redis) -> None:
    jobs = JobStore(redis)
    waiting = await submitted(jobs, "ivy", "waiting")
    running = await submitted(jobs, "ivy", "running")
    assert (await claim(jobs, running, START)).proceed
    assert await cancel_job(jobs, waiting, CAP, queued_seconds=120) == "queued"
    assert await cancel_job(jobs, running, CAP, queued_seconds=120) == "active"
    assert 0 < await redis.ttl(names.job(waiting)) <= 120
    assert 120 < await redis.ttl(names.job(running)) <= CAP.seconds


async def test_an_evicted_job_still_answers_its_replay_and_is_gone_from_reads(
    redis_url: str, tmp_path: Path, redis: Redis
) -> None:
    settings = make_settings(redis_url, tmp_path / "data", report_retention_count=2)
    key = bearer(await create_key(settings, "una", "pro"))
    jobs = JobStore(redis)
    async with api_with(settings) as api:
        body = {"inputDataUrl": "https://example.com/a.csv", "idempotencyKey": "first-report"}
        first = (await api.post("/api/reports", json=body, headers=key)).json()
        kept_two = Retention(3600, 2)
        await finish(jobs, first["jobId"], kept_two)
        for n in range(2):
            await completed(jobs, "una", f"later-{n}", kept_two)
        replay = await api.post("/api/reports", json=body, headers=key)
        assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["jobId"] == first["jobId"] and replay.json()["reportId"] == first["reportId"]
        gone = await api.get(f"/api/reports/{first['jobId']}", headers=key)
        assert gone.status_code == 404 and "no longer retained" in gone.json()["message"]
        events = await api.get(f"/api/reports/{first['jobId']}/events", headers=key)
        assert events.status_code == 404


async def test_evicted_jobs_cost_little_memory(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_ids = [await completed(jobs, "vic", f"job-{n}") for n in range(4)]
    evicted = await redis.memory_usage(names.job(job_ids[0]))
    kept = await redis.memory_usage(names.job(job_ids[-1]))
    assert evicted is not None and kept is not None and evicted < kept and evicted < 400
    assert not await redis.exists(names.job_events(job_ids[0]))
