"""Webhook deliveries in Redis: scheduled by the job's end itself, once, leased to one worker at a
time, settled only by the lease holder, and the status object's ``callback``."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names, webhook_lua
from service.store.connection import open_redis
from service.store.job_types import NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id
from service.store.views import status_view
from service.store.webhook_secrets import WebhookSecrets
from service.store.webhooks import Claim, WebhookDeliveries
from tests.store.support import cancel, claim, complete, fail

OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
SHUT = SubmitPolicy(per_minute=1, burst=0, budget=0, reserve=0, period="2026-11")  # every submission: 429
KEEP = Retention(seconds=3600, count=1000)
HOOK = "https://hooks.example.com/reports"
GIVE_UP_MS = 60_000
RESULT = {"model": "m", "inputTokens": 1, "outputTokens": 1, "tokensUsed": 2}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


async def submit(jobs: JobStore, name: str, callback: str | None = HOOK, policy: SubmitPolicy = OPEN) -> str:
    job_id = derive_job_id("user", name)
    new = NewJob(job_id, "user", "pro", "https://x/y.csv", "m", "fp", callback_url=callback)
    await jobs.submit(new, policy, keep_ms=60_000, score_ms=1)
    return job_id


async def cancelled(jobs: JobStore, name: str) -> str:
    """A job with a callback that ended (cancelled while queued): its end scheduled its delivery."""
    job_id = await submit(jobs, name)
    assert await cancel(jobs, job_id, KEEP, queued_seconds=3600) == "queued"
    return job_id


async def due_now(deliveries: WebhookDeliveries) -> list[str]:
    return (await deliveries.due(10))[0]


async def claim_one(deliveries: WebhookDeliveries, job_id: str, lease_ms: int = 10_000) -> Claim | None:
    claims = await deliveries.claim([job_id], lease_ms=lease_ms, give_up_ms=GIVE_UP_MS)
    return claims[0] if claims else None


async def test_a_job_with_a_callback_keeps_it_in_its_record_and_a_refused_one_leaves_nothing(
    redis: Redis,
) -> None:
    jobs = JobStore(redis)
    with_hook, without = await submit(jobs, "with-hook"), await submit(jobs, "no-hook", callback=None)
    assert (await jobs.get(with_hook) or {})["callback_url"] == HOOK
    assert "callback_url" not in (await jobs.get(without) or {})
    refused = await submit(jobs, "refused", policy=SHUT)
    assert await jobs.get(refused) is None and await redis.zcard(names.WEBHOOKS_DUE) == 0


async def test_every_ending_schedules_the_delivery_once_and_a_running_job_has_none(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    ids = [await submit(jobs, name) for name in ("done", "broken", "stopped", "waiting")]
    start = StartPolicy(max_crashes=3, cap_free=0, cap_pro=0, lease_ms=60_000)
    for job_id in ids[:3]:
        assert (await claim(jobs, job_id, start)).proceed
    assert await due_now(deliveries) == []  # running or queued: nothing to send yet
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(names.WEBHOOKS_CHANNEL)
        assert await complete(jobs, ids[0], RESULT, KEEP)
        assert await fail(jobs, ids[1], "broken input", KEEP)
        assert await cancel(jobs, ids[2], KEEP) == "active"
        assert await cancel(jobs, ids[3], KEEP) == "queued"
        heard: list[str] = []
        for _ in range(20):  # the subscription's own confirmation comes first, as None
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message:
                heard.append(message["data"])
            if len(heard) == len(ids):
                break
    assert sorted(heard) == sorted(ids)  # the delivery loops are woken
    assert sorted(await due_now(deliveries)) == sorted(ids)
    assert not await complete(jobs, ids[0], RESULT, KEEP)  # ended already: nothing scheduled twice
    assert await redis.zcard(names.WEBHOOKS_DUE) == 4


async def test_a_claim_leases_the_delivery_to_one_worker_until_its_lease_runs_out(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await cancelled(jobs, "leased")
    first = await claim_one(deliveries, job_id, lease_ms=300)
    assert first is not None and (first.attempts, first.url, first.user_id) == (1, HOOK, "user")
    assert await claim_one(deliveries, job_id) is None  # held
    assert await due_now(deliveries) == []
    await asyncio.sleep(0.35)  # the holder died: its lease runs out
    second = await claim_one(deliveries, job_id)
    assert second is not None and second.attempts == 2 and second.token != first.token


async def test_every_attempt_carries_the_message_written_at_the_first(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await cancelled(jobs, "message")
    first = await deliveries.with_message(await claim_one(deliveries, job_id, lease_ms=1) or Claim("", "", 0))
    assert first is not None and re.fullmatch(r"msg_[0-9a-f]{24}", first.message_id)
    await asyncio.sleep(0.01)
    again = await claim_one(deliveries, job_id)
    assert again is not None and (again.message_id, again.body) == (first.message_id, first.body)
    record = await jobs.get(job_id) or {}
    assert first.message_id == "msg_" + record["report_id"].removeprefix("rep_")
    assert b'"type":"report.cancelled"' in first.body


async def test_only_the_lease_holder_settles_and_a_retry_is_due_after_its_delay(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await cancelled(jobs, "settle")
    stale = await claim_one(deliveries, job_id, lease_ms=1)
    await asyncio.sleep(0.01)
    holder = await claim_one(deliveries, job_id)
    assert stale is not None and holder is not None
    assert await deliveries.settle(stale, "delivered", give_up_ms=GIVE_UP_MS) == "stale"
    assert await deliveries.settle(holder, "retry", retry_in_ms=200, give_up_ms=GIVE_UP_MS) == "retry"
    assert await due_now(deliveries) == []
    await asyncio.sleep(0.25)
    third = await claim_one(deliveries, job_id)
    assert third is not None and third.attempts == 3
    assert await deliveries.settle(third, "delivered", give_up_ms=GIVE_UP_MS) == "delivered"
    assert await redis.exists(names.webhook(job_id)) == 0 and await redis.zcard(names.WEBHOOKS_DUE) == 0
    callback = status_view(job_id, await jobs.get(job_id) or {})["callback"]
    assert callback == {"url": HOOK, "state": "delivered", "attempts": 3}


async def test_a_retry_that_would_fall_past_the_give_up_time_fails_the_delivery(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await cancelled(jobs, "give-up")
    claim = await claim_one(deliveries, job_id)
    assert claim is not None
    assert await deliveries.settle(claim, "retry", retry_in_ms=2_000, give_up_ms=1_000) == "failed"
    callback = status_view(job_id, await jobs.get(job_id) or {})["callback"]
    assert callback == {"url": HOOK, "state": "failed", "attempts": 1}


async def test_a_released_lease_makes_the_delivery_due_again_at_once(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await cancelled(jobs, "release")
    claim = await claim_one(deliveries, job_id, lease_ms=60_000)
    assert claim is not None and await due_now(deliveries) == []
    assert await deliveries.release(claim)
    assert await due_now(deliveries) == [job_id]


async def test_a_delivery_put_in_the_due_set_by_the_job_ending_scripts_line_is_claimed(redis: Redis) -> None:
    """What the job's end does (a ZADD of the job id, nothing else) is enough: the first claim builds
    the delivery from the record."""
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await cancelled(jobs, "lead-line")
    await redis.zadd(names.WEBHOOKS_DUE, {job_id: 0}, nx=True)
    claim = await claim_one(deliveries, job_id)
    assert claim is not None and claim.url == HOOK and claim.attempts == 1
    assert status_view(job_id, await jobs.get(job_id) or {})["callback"]["state"] == "pending"


async def test_a_due_entry_for_a_job_without_a_callback_is_dropped(redis: Redis) -> None:
    jobs, deliveries = JobStore(redis), WebhookDeliveries(redis)
    job_id = await submit(jobs, "no-callback", callback=None)
    await cancel(jobs, job_id, KEEP, queued_seconds=3600)
    await redis.zadd(names.WEBHOOKS_DUE, {job_id: 0})
    assert await claim_one(deliveries, job_id) is None
    assert await redis.zcard(names.WEBHOOKS_DUE) == 0


async def test_the_status_object_says_callback_pending_until_delivered_and_null_without_one(
    redis: Redis,
) -> None:
    jobs = JobStore(redis)
    with_hook, without = await submit(jobs, "status"), await submit(jobs, "plain", callback=None)
    assert status_view(with_hook, await jobs.get(with_hook) or {})["callback"] == {
        "url": HOOK, "state": "pending", "attempts": 0,
    }  # fmt: skip
    assert status_view(without, await jobs.get(without) or {})["callback"] is None


async def test_a_users_secret_is_created_on_first_use_stable_after_and_their_own(redis: Redis) -> None:
    first = await WebhookSecrets(redis).secret_for("alice")
    assert first.startswith("whsec_") and 24 <= len(base64.b64decode(first[6:], validate=True)) <= 64
    assert await WebhookSecrets(redis).secret_for("alice") == first  # another process, the same
    assert await WebhookSecrets(redis).secret_for("bob") != first


SCRIPTS = {
    "DUE": (webhook_lua.DUE, 1),
    "CLAIM": (webhook_lua.CLAIM, 3),
    "KEEP_MESSAGE": (webhook_lua.KEEP_MESSAGE, 1),
    "SETTLE": (webhook_lua.SETTLE, 3),
    "RELEASE": (webhook_lua.RELEASE, 2),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_webhook_scripts_get_every_key_in_keys(name: str) -> None:
    """No key name built inside Lua: every key a command touches comes in KEYS."""
    source, keys = SCRIPTS[name]
    assert "rs:" not in source and "arq:" not in source and "@" not in source
    assert set(re.findall(r"KEYS\[(\d+)\]", source)) == {str(n) for n in range(1, keys + 1)}
    assert not re.search(r"redis\.call\('(?!TIME)[A-Z]+', [^K]", source)
