"""The upload admission script on a real Redis: rate, quota, refunds, and bytes freed as uploads expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.store import names
from service.store.connection import open_redis
from service.store.upload_quota import UploadPolicy, UploadQuotaStore

NO_RATE = UploadPolicy(per_minute=0, burst=1, quota_bytes=100, retention_ms=60_000)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> UploadQuotaStore:
    return UploadQuotaStore(redis)


async def test_uploads_are_charged_until_the_quota_then_refused_charging_nothing(
    store: UploadQuotaStore, redis: Redis
) -> None:
    assert (await store.admit("alice", "inp_a", 60, NO_RATE)).kind == "admitted"
    assert (await store.admit("alice", "inp_b", 40, NO_RATE)).kind == "admitted"  # exactly full
    refused = await store.admit("alice", "inp_c", 1, NO_RATE)
    assert (refused.kind, refused.used) == ("over_quota", 100)
    assert await store.used("alice") == 100
    assert await redis.zrange(names.upload_sizes("alice"), 0, -1) == ["inp_a:60", "inp_b:40"]
    assert (await store.admit("bob", "inp_d", 100, NO_RATE)).kind == "admitted"  # quotas are per user


async def test_a_refusal_says_when_enough_expires_for_the_upload_to_fit(
    store: UploadQuotaStore, redis: Redis
) -> None:
    for input_id, size in (("inp_1", 30), ("inp_2", 30), ("inp_3", 30)):
        assert (await store.admit("alice", input_id, size, NO_RATE)).kind == "admitted"
        await asyncio.sleep(0.01)
    refused = await store.admit("alice", "inp_4", 50, NO_RATE)  # needs the two oldest gone
    expiries = [score for _, score in await redis.zrange(names.upload_sizes("alice"), 0, -1, withscores=True)]
    assert refused.fits_at_ms == int(expiries[1])
    never = await store.admit("alice", "inp_5", 101, NO_RATE)
    assert (never.kind, never.fits_at_ms) == ("over_quota", 0)  # larger than the whole quota


async def test_the_quota_frees_itself_as_uploads_expire(store: UploadQuotaStore, redis: Redis) -> None:
    short = UploadPolicy(per_minute=0, burst=1, quota_bytes=100, retention_ms=300)
    assert (await store.admit("alice", "inp_a", 100, short)).kind == "admitted"
    assert (await store.admit("alice", "inp_b", 100, short)).kind == "over_quota"
    await asyncio.sleep(0.35)
    assert (await store.admit("alice", "inp_b", 100, short)).kind == "admitted"
    assert await store.used("alice") == 100
    await asyncio.sleep(0.35)
    assert await redis.exists(names.uploads("alice"), names.upload_sizes("alice")) == 0  # nothing stale


async def test_a_refund_gives_the_bytes_back_once_however_often_it_is_sent(store: UploadQuotaStore) -> None:
    assert (await store.admit("alice", "inp_a", 70, NO_RATE)).kind == "admitted"
    assert (await store.admit("alice", "inp_b", 30, NO_RATE)).kind == "admitted"
    for _ in range(3):
        await store.refund("alice", "inp_a", 70)
    assert await store.used("alice") == 30


async def test_uploading_too_fast_is_refused_with_the_wait(store: UploadQuotaStore) -> None:
    policy = UploadPolicy(per_minute=60, burst=2, quota_bytes=0, retention_ms=60_000)
    answers = [await store.admit("alice", f"inp_{n}", 1, policy) for n in range(3)]
    assert [answer.kind for answer in answers] == ["admitted", "admitted", "rate_limited"]
    assert 0 < answers[2].wait_ms <= 1000
    started = time.monotonic()
    while (await store.admit("alice", "inp_late", 1, policy)).kind != "admitted":
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 1.5
