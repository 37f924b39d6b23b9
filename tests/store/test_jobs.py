"""The Redis store on its own: keys kept hashed, state changes that cannot run twice, bounded retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.connection import open_redis
from service.store.job_types import NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id
from service.store.keys import KeyStore
from tests.store.support import cancel as cancel_job
from tests.store.support import claim, record_of, requeue
from tests.store.support import complete as complete_job

RESULT = {"model": "m", "inputTokens": 10, "outputTokens": 5, "tokensUsed": 15}
KEEP = Retention(seconds=3600, count=1000)
OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=60_000)
# A lease of a millisecond: each start finds the worker of the one before it dead.
DYING = StartPolicy(max_crashes=2, cap_free=0, cap_pro=0, lease_ms=1)


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
    assert (await claim(jobs, job_id, START)).proceed
    assert await complete_job(
        jobs, job_id, RESULT, retention, pdf_key=f"reports/{name}.pdf", period="2026-11"
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
    assert not await complete_job(jobs, job_id, RESULT, KEEP, period="2026-11")
    assert await jobs.usage("user", "2026-11") == {"reports": 1}  # tokens: the call ledger's
    again = await claim(jobs, job_id, START)
    assert (again.state, again.proceed) == ("completed", False)


async def test_the_queue_says_what_is_due_and_when_the_rest_is(redis: Redis) -> None:
    jobs = JobStore(redis)
    first, second = await submit(jobs, "first"), await submit(jobs, "second")
    due = await jobs.due(10)
    assert [names.split_member(m)[0] for m in due.members] == [first, second] and due.next_in_ms is None
    assert (await claim(jobs, first, START)).proceed
    assert (await claim(jobs, second, START)).proceed
    assert await requeue(jobs, second, delay=30)
    due = await jobs.due(10)  # the running job is due at its lease's end, the other after its wait
    assert due.members == [] and due.next_in_ms is not None and 25_000 < due.next_in_ms <= 30_000
    assert (await claim(jobs, second, START)).state == "taken"  # not due yet: nobody may run it


async def test_two_workers_racing_for_a_job_one_gets_it(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_id = await submit(jobs, "race")
    outcomes = await asyncio.gather(*(claim(jobs, job_id, START) for _ in range(5)))
    assert sorted(o.state for o in outcomes) == ["active", "taken", "taken", "taken", "taken"]
    assert (await record_of(jobs, job_id))["attempts"] == "1"


async def test_a_start_after_a_silent_death_counts_a_crash_not_an_attempt(redis: Redis) -> None:
    """The first death, in company, only makes the job a suspect; it then runs alone, and each
    death alone is its own: blamed, until the limit."""
    jobs = JobStore(redis)
    job_id = await submit(jobs, "crashy")
    starts = [await claim(jobs, job_id, DYING, others_here=1)]
    for _ in range(4):  # each start finds the one before it never reported back
        await asyncio.sleep(0.005)
        starts.append(await claim(jobs, job_id, DYING))
    assert [(s.state, s.attempts, s.crashes, s.alone, s.restarted) for s in starts] == [
        ("active", 1, 0, False, False),
        ("active", 1, 0, True, True),  # died in company: a suspect, run alone, not blamed
        ("active", 1, 1, True, True),
        ("active", 1, 2, True, True),
        ("crashed", 1, 3, False, True),  # claimed, for the worker to fail (code worker_crashed)
    ]
    record = await record_of(jobs, job_id)
    assert (record["crashes"], record["co_crashes"], record["state"]) == ("3", "1", "active")


async def test_a_suspect_waits_for_a_worker_of_its_own_and_others_wait_while_it_runs(redis: Redis) -> None:
    jobs = JobStore(redis)
    suspect, neighbour = await submit(jobs, "suspect"), await submit(jobs, "neighbour")
    assert (await claim(jobs, suspect, DYING)).proceed
    await asyncio.sleep(0.005)
    deferred = await claim(jobs, suspect, DYING, others_here=2, defer_ms=0)  # its worker died
    assert deferred.state == "deferred" and (await record_of(jobs, suspect))["state"] == "queued"
    alone = await claim(jobs, suspect, START, others_here=0)
    assert (alone.state, alone.alone, alone.crashes) == ("active", True, 0)
    beside = await claim(jobs, neighbour, START, others_here=1, suspect_here=True)
    assert beside.state == "deferred" and (await record_of(jobs, neighbour))["attempts"] == "0"


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


async def test_a_finished_job_keeps_its_stream_a_minute_and_its_ending_in_the_record(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_id = await finished_job(jobs, "short", Retention(seconds=120, count=10))
    assert not await jobs.advance(job_id, stage="late", progress=1)  # refused: the job is finished
    events = await redis.xrange(names.job_events(job_id))
    assert [fields["event"] for _, fields in events] == ["progress", "progress", "completed"]
    record = await record_of(jobs, job_id)
    assert record["end_id"] == events[-1][0]  # served from the record once the stream is gone
    assert names.ANSWER_FIELD not in record
    assert 0 < await redis.pttl(names.job_events(job_id)) <= names.REPLAY_MS
    assert 60 < await redis.ttl(names.job(job_id)) <= 120


async def test_cancelling_a_queued_job_removes_it_from_the_queue_in_the_same_step(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_id = await submit(jobs, "cancel-me")
    assert await cancel_job(jobs, job_id, KEEP, queued_seconds=60) == "queued"
    assert await redis.zcard(names.QUEUE) == 0
    assert (await claim(jobs, job_id, START)).state == "cancelled"
    assert await cancel_job(jobs, job_id, KEEP, queued_seconds=60) == "cancelled"


async def test_cancelling_a_running_job_tells_its_worker_which_lets_go_of_it(redis: Redis) -> None:
    jobs = JobStore(redis)
    job_id = await submit(jobs, "stop-me")
    assert (await claim(jobs, job_id, START)).proceed
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(names.CANCEL_CHANNEL)
        assert await cancel_job(jobs, job_id, KEEP) == "active"
        message = None
        for _ in range(20):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
        assert message is not None and message["data"] == job_id
    assert await redis.zcard(names.QUEUE) == 1  # its worker still holds it
    assert not await jobs.advance(job_id, stage="storing", progress=90)  # the worker's next step: stop
    assert not await requeue(jobs, job_id, count_attempt=False)  # its hand-back lets go
    assert await redis.zcard(names.QUEUE) == 0
