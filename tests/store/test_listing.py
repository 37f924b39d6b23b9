"""A user's listing: their own jobs, newest first, a page at a time, filtered by state; tombstones
and other users' jobs never appear; cursors are opaque and refused when forged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store.connection import open_redis
from service.store.job_types import NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id
from service.store.listing import JobListing, decode_cursor
from tests.store.support import cancel as cancel_job
from tests.store.support import claim
from tests.store.support import complete as complete_job

OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-12")
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=60_000)
RESULT = {"model": "m", "inputTokens": 1, "outputTokens": 1, "tokensUsed": 2}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def submitted(jobs: JobStore, user: str, name: str) -> str:
    await asyncio.sleep(0.002)  # a millisecond of its own: "newest first" is by creation time
    job_id = derive_job_id(user, name)
    new = NewJob(job_id, user, "pro", "https://x/y.csv", "m", "fp")
    assert (await jobs.submit(new, OPEN, keep_ms=3_600_000, score_ms=1)).kind == "created"
    return job_id


async def everything(listing: JobListing, user: str, limit: int, state: str | None = None) -> list[str]:
    seen, cursor = [], None
    for _ in range(50):
        page = await listing.page(user, limit=limit, cursor=cursor, state=state)
        seen += [record["job_id"] for record in page.records]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
    raise AssertionError("the listing never ended")


async def test_pages_walk_the_users_jobs_newest_first_once_each(redis: Redis) -> None:
    jobs, listing = JobStore(redis), JobListing(redis)
    mine = [await submitted(jobs, "amy", f"job-{n}") for n in range(7)]
    await submitted(jobs, "bob", "not-amys")
    assert await everything(listing, "amy", limit=3) == list(reversed(mine))
    assert await everything(listing, "amy", limit=100) == list(reversed(mine))


async def test_a_state_filter_returns_only_that_state_across_pages(redis: Redis) -> None:
    jobs, listing = JobStore(redis), JobListing(redis)
    job_ids = [await submitted(jobs, "amy", f"job-{n}") for n in range(9)]
    for job_id in job_ids[::3]:
        assert await cancel_job(jobs, job_id, Retention(3600, 100), queued_seconds=3600) == "queued"
    assert await everything(listing, "amy", limit=2, state="cancelled") == list(reversed(job_ids[::3]))


async def test_tombstones_leave_the_listing(redis: Redis) -> None:
    jobs, listing = JobStore(redis), JobListing(redis)
    job_ids = []
    for n in range(3):  # a millisecond apart: "newest first" orders jobs of one millisecond by id
        job_ids.append(await submitted(jobs, "amy", f"job-{n}"))
        await asyncio.sleep(0.002)
    for job_id in job_ids:
        assert (await claim(jobs, job_id, START)).proceed
        await complete_job(jobs, job_id, RESULT, Retention(3600, 2), pdf_key="r/x.pdf", period="2026-12")
    assert await everything(listing, "amy", limit=10) == list(reversed(job_ids[1:]))


async def test_jobs_created_in_the_same_millisecond_are_each_listed_once(redis: Redis) -> None:
    jobs, listing = JobStore(redis), JobListing(redis)
    job_ids = set()
    for n in range(6):
        job_id = derive_job_id("cal", f"same-{n}")
        new = NewJob(job_id, "cal", "pro", "https://x/y.csv", "m", "fp")
        await jobs.submit(new, OPEN, keep_ms=3_600_000, score_ms=1)
        job_ids.add(job_id)
    await redis.zadd("rs:user:cal:jobs", dict.fromkeys(job_ids, 1_700_000_000_000))  # all in one ms
    listed = await everything(listing, "cal", limit=2)
    assert sorted(listed) == sorted(job_ids) and len(listed) == len(job_ids)


@pytest.mark.parametrize("forged", ["", "nonsense", "MTIzOmFiYw", "w7I6" + "a" * 32])
def test_a_cursor_not_handed_out_by_the_listing_is_refused(forged: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(forged)
