"""The Redis store on its own: keys kept hashed, state changes that cannot run twice, bounded retention."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.connection import open_redis
from service.store.job_types import NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id
from service.store.keys import KeyStore

RESULT = {"model": "m", "inputTokens": 10, "outputTokens": 5, "tokensUsed": 15}
KEEP = Retention(seconds=3600, count=1000)
OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=60_000)


async def submit(jobs: JobStore, name: str, policy: SubmitPolicy = OPEN, user: str = "user") -> str:
    job_id = derive_job_id(user, name)
    new = NewJob(job_id, user, "pro", "https://x/y.csv", "m", "fp")
    outcome = await jobs.submit(new, policy, keep_ms=60_000, score_ms=1)
    assert outcome.kind == "created", outcome
    return job_id


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def finished_job(jobs: JobStore, name: str, retention: Retention = KEEP) -> str:
    job_id = await submit(jobs, name)
    assert (await jobs.start(job_id, START, stage="queued", progress=0)).proceed
    assert await jobs.complete(
        job_id, RESULT, pdf_key=f"reports/{name}.pdf", retention=retention, period="2026-11"
    )
    return job_id


async def test_keys_are_stored_only_as_digests(redis: Redis) -> None:
    store = KeyStore(redis)
    api_key, info = await store.create("alice", "pro")
    dumped = [str(await redis.hgetall(k)) + k async for k in redis.scan_iter("rs:apikey*", _type="hash")]  # type: ignore[misc]
    assert dumped and not any(api_key in text or api_key[4:] in text for text in dumped)
    caller = await store.authenticate(api_key)
    assert caller is not None and (caller.user_id, caller.plan, caller.key_id) == (
        "alice",
        "pro",
        info.key_id,
    )


async def test_a_revoked_key_stops_at_once_without_a_cache_and_within_the_ttl_with_one(redis: Redis) -> None:
    uncached, cached = KeyStore(redis), KeyStore(redis, cache_seconds=0.3)
    api_key, _ = await uncached.create("bob", "free")
    assert await cached.authenticate(api_key) is not None
    await uncached.revoke(api_key)
    assert await uncached.authenticate(api_key) is None
    assert await cached.authenticate(api_key) is not None  # remembered for cache_seconds
    await asyncio.sleep(0.35)
    assert await cached.authenticate(api_key) is None


async def test_completing_twice_counts_the_report_once(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_id = await finished_job(jobs, "once")
    assert not await jobs.complete(job_id, RESULT, pdf_key="reports/x.pdf", retention=KEEP, period="2026-11")
    assert await jobs.usage("user", "2026-11") == {"reports": 1}  # tokens: the call ledger's
    again = await jobs.start(job_id, START, stage="queued", progress=0)
    assert (again.state, again.proceed) == ("completed", False)


async def test_a_start_after_a_silent_death_counts_a_crash_not_an_attempt(redis: Redis) -> None:
    """The first death, in company, only makes the job a suspect; it then runs alone, and each
    death alone is its own: blamed, until the limit."""
    jobs = JobStore(redis)
    job_id = await submit(jobs, "crashy")
    policy = StartPolicy(max_crashes=2, cap_free=0, cap_pro=0, lease_ms=60_000)
    starts = [await jobs.start(job_id, policy, stage="queued", progress=0, others_here=1)]
    for _ in range(4):  # each start finds the one before it never reported back
        starts.append(await jobs.start(job_id, policy, stage="queued", progress=0))
    assert [(s.state, s.attempts, s.crashes, s.alone) for s in starts] == [
        ("active", 1, 0, False),
        ("active", 1, 0, True),  # died in company: a suspect, run alone, not blamed
        ("active", 1, 1, True),
        ("active", 1, 2, True),
        ("crashed", 1, 3, False),
    ]
    record = await jobs.get(job_id)
    assert record is not None and (record["crashes"], record["co_crashes"]) == ("3", "1")
    assert record["state"] == "failed" and json.loads(record["error"])["code"] == "worker_crashed"


async def test_a_suspect_waits_for_a_worker_of_its_own_and_others_wait_while_it_runs(redis: Redis) -> None:
    jobs = JobStore(redis)
    suspect, neighbour = await submit(jobs, "suspect"), await submit(jobs, "neighbour")
    policy = StartPolicy(max_crashes=2, cap_free=0, cap_pro=0, lease_ms=60_000)
    assert (await jobs.start(suspect, policy, stage="queued", progress=0)).proceed
    deferred = await jobs.start(suspect, policy, stage="queued", progress=0, others_here=2)  # its worker died
    assert deferred.state == "deferred" and (await jobs.get(suspect) or {})["state"] == "queued"
    alone = await jobs.start(suspect, policy, stage="queued", progress=0, others_here=0)
    assert (alone.state, alone.alone, alone.crashes) == ("active", True, 0)
    beside = await jobs.start(neighbour, policy, stage="queued", progress=0, others_here=1, suspect_here=True)
    assert beside.state == "deferred" and (await jobs.get(neighbour) or {})["attempts"] == "0"


async def test_completed_jobs_beyond_the_cap_become_tombstones_oldest_first(redis: Redis) -> None:
    jobs = JobStore(redis)
    cap = Retention(seconds=3600, count=3)
    job_ids = [await finished_job(jobs, f"job-{i}", cap) for i in range(5)]
    whole = [job_id for job_id in job_ids if "result" in await redis.hgetall(names.job(job_id))]  # type: ignore[misc]
    assert whole == job_ids[2:]
    tombstone = await redis.hgetall(names.job(job_ids[0]))  # type: ignore[misc]
    assert tombstone["evicted"] == "1" and tombstone["state"] == "completed" and "result" not in tombstone
    assert 0 < await redis.ttl(names.job(job_ids[0])) <= 3600  # a replay stays a replay until then
    assert not await redis.exists(names.job_events(job_ids[0]))
    assert await redis.zcard(names.user_finished("user", "completed")) == 3
    assert (await jobs.usage("user", "2026-11"))["reports"] == 5  # usage is history, not retention


async def test_finished_streams_stay_whole_then_compact_to_their_end_keeping_ids_and_expiry(
    redis: Redis,
) -> None:
    jobs = JobStore(redis)
    job_id = await finished_job(jobs, "short", Retention(seconds=120, count=10))
    await jobs.advance(job_id, stage="late", progress=1)  # refused: the job is finished
    whole = await redis.xrange(names.job_events(job_id))
    assert [fields["event"] for _, fields in whole] == ["progress", "progress", "completed"]
    assert await jobs.compact_finished(older_than_seconds=60) == 0  # too recent: readers may be behind
    assert await jobs.compact_finished(older_than_seconds=0) == 1
    assert await redis.xrange(names.job_events(job_id)) == whole[-2:]  # same ids: Last-Event-ID still works
    assert 0 < await redis.ttl(names.job(job_id)) <= 120
    assert 0 < await redis.ttl(names.job_events(job_id)) <= 120
    assert await jobs.compact_finished(older_than_seconds=0) == 0


async def test_cancelling_a_queued_job_removes_it_from_the_queue_in_the_same_step(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_id = await submit(jobs, "cancel-me")
    assert await jobs.cancel(job_id, retention=KEEP, queued_seconds=60) == "queued"
    assert await redis.zscore("arq:queue", job_id) is None
    assert not await redis.exists(f"arq:job:{job_id}")
    assert (await jobs.start(job_id, START, stage="queued", progress=0)).state == "cancelled"
    assert await jobs.cancel(job_id, retention=KEEP, queued_seconds=60) == "cancelled"
