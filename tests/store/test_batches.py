"""The batch lane's scripts on a real Redis: one intent at a time, a job taken into an intent only
while it waits in the lane, a batch recorded only by its own intent, a job moved back to the queue
once, and the driver's lease held by one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.batches import BatchStore, Intent
from service.store.connection import open_redis
from service.store.job_types import NewJob, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, member_of
from tests.store.support import cancel, claim, record_of

OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
POLICY = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=60_000)
LANE_LEASE_MS = 3_600_000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def handed_off(jobs: JobStore, lane: BatchStore, name: str) -> str:
    """A batch job claimed and handed to the lane, as a worker does."""
    job_id = f"{name:0<32}"[:32]
    await jobs.submit(NewJob(job_id, "u", "pro", "https://x/y.csv", "m", "fp", lane="batch"), OPEN,
                      keep_ms=60_000, score_ms=1)  # fmt: skip
    assert (await claim(jobs, job_id, POLICY)).state == "active"
    record = await record_of(jobs, job_id)
    assert await lane.hand_off(record, "request", lease_ms=LANE_LEASE_MS, call_id="c1", source="s",
                               input_name="a.csv")  # fmt: skip
    return member_of(record)


async def test_one_intent_at_a_time_and_only_jobs_waiting_in_the_lane(redis: Redis) -> None:
    jobs, lane = JobStore(redis), BatchStore(redis)
    first, second, third = [await handed_off(jobs, lane, name) for name in "abc"]
    assert (await lane.pending_due(0, 10)).members == [first, second, third]
    assert await cancel(jobs, second.split(":")[0]) == "active"

    taken = await lane.take([first, second], "t1", "2026-12-01T00:00:00+00:00")
    assert taken.intent is not None and taken.intent.members == (first,) and taken.gone == (second,)
    assert (await lane.take([third], "t2", "2026-12-01T00:00:01+00:00")).intent is None  # t1 is open
    assert await lane.intent() == taken.intent
    stranger = Intent("t2", "", (first,))  # another driver's intent, long resolved
    assert not await lane.record_batch(stranger, "b2", created_ms=1, first_poll_ms=0)
    assert await lane.record_batch(taken.intent, "b1", created_ms=1, first_poll_ms=0)
    assert await lane.intent() is None and await lane.known() == {"b1"}
    record = await record_of(jobs, first.split(":")[0])
    assert (record["batch_state"], record["batch_id"], record["stage"]) == ("sent", "b1", "in_batch")
    # A job claimed again (its lane lease ran out) is not the lane's to take until it is handed off again.
    await redis.hset(names.job(third.split(":")[0]), "stage", "fetching")  # type: ignore[misc]
    taken = await lane.take([third], "t3", "2026-12-01T00:00:02+00:00")
    # The cancelled one waits for its hold to go back (the driver closes its call), then leaves.
    assert taken.intent is None and (await lane.pending_due(0, 10)).members == [second]
    assert await lane.forget(second) and (await lane.pending_due(0, 10)).members == []
    assert not await lane.forget(first)  # still running: it stays the lane's


async def test_a_job_goes_back_to_the_queue_once_with_its_outcome(redis: Redis) -> None:
    jobs, lane = JobStore(redis), BatchStore(redis)
    member = await handed_off(jobs, lane, "d")
    taken = await lane.take([member], "t1", "2026-12-01T00:00:00+00:00")
    assert taken.intent is not None and await lane.record_batch(taken.intent, "b1", created_ms=1,
                                                                first_poll_ms=0)  # fmt: skip
    assert not await lane.return_job(member, "b-other", "answered", None)  # not its batch
    assert await lane.return_job(member, "b1", "answered", None)
    assert not await lane.return_job(member, "b1", "answered", None)
    record = await record_of(jobs, member.split(":")[0])
    assert (record["state"], record["batch_state"], record["attempts"]) == ("queued", "answered", "0")
    assert (await jobs.due(5)).members == [member]


async def test_the_reset_intent_puts_its_jobs_back_to_wait(redis: Redis) -> None:
    jobs, lane = JobStore(redis), BatchStore(redis)
    member = await handed_off(jobs, lane, "e")
    taken = await lane.take([member], "t1", "2026-12-01T00:00:00+00:00")
    assert taken.intent is not None and await lane.reset_intent(taken.intent)
    assert not await lane.reset_intent(taken.intent)
    assert await lane.intent() is None and (await lane.pending_due(0, 10)).members == [member]


async def test_the_window_and_the_batch_size_decide_when_pending_jobs_are_sent(redis: Redis) -> None:
    jobs, lane = JobStore(redis), BatchStore(redis)
    members = [await handed_off(jobs, lane, name) for name in "fg"]
    waiting = await lane.pending_due(60_000, 10)
    assert waiting.members == [] and waiting.wait_ms is not None and 0 < waiting.wait_ms <= 60_000
    assert (await lane.pending_due(60_000, 2)).members == members  # full: sent at once
    assert (await lane.pending_due(60_000, 1)).members == members[:1]


async def test_the_drivers_lease_is_held_by_one(redis: Redis) -> None:
    lane = BatchStore(redis)
    assert await lane.lease("a", 10_000) and not await lane.lease("b", 10_000)
    assert await lane.lease("a", 10_000)  # renewed
    await lane.release("b")  # not b's to give back
    assert not await lane.lease("b", 10_000)
    await lane.release("a")
    assert await lane.lease("b", 10_000)
