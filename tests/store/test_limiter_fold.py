"""Folding the provider's rate-limit readings into the shared buckets, on a real Redis: lowered to
what the provider has left, never raised, corrected for what the fleet spent since the snapshot,
and others' spending learnt as a slower refill."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.core.ratelimit import LimitReading, ProviderLimits
from service.core.settings import Settings
from service.store import names
from service.store.connection import open_redis
from service.store.limiter import Grant, LlmLimiter, LlmLimits, limits_from

MODEL = "claude-test"
BIG = 10_000_000
ITPM = 60_000  # 1,000 input tokens a second


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = open_redis(redis_url, fail_fast=False)
    yield client
    await client.aclose()


def limiter(client: Redis, *, window: float = 10.0) -> LlmLimiter:
    return LlmLimiter(client, LlmLimits(BIG, ITPM, BIG), foreign_window=window)


def inputs(remaining: int, limit: int = ITPM, reset_in: float | None = None) -> ProviderLimits:
    """Input-token readings only, as of now; by default a token bucket's reset for that level."""
    reset = (limit - remaining) * 60 / limit if reset_in is None else reset_in
    return ProviderLimits(None, LimitReading(limit, remaining, reset), None, read_at=time.monotonic())


async def grant_of(limits: LlmLimiter, input_tokens: int = 100) -> Grant:
    granted = await limits.acquire(MODEL, input_tokens, 0)
    assert isinstance(granted, Grant)
    return granted


async def input_wait(limits: LlmLimiter, tokens: int) -> float:
    return await limits.wait_time(MODEL, tokens, 0)


async def test_a_bucket_is_lowered_to_what_the_provider_says_is_left(redis_client: Redis) -> None:
    limits = limiter(redis_client)
    grant = await grant_of(limits)
    assert await input_wait(limits, 50_000) == 0  # our own books: 59,900 left
    await limits.fold(grant, inputs(remaining=20_000))
    # 20,000 left at the provider: 30,000 more come back at 1,000 a second.
    assert await input_wait(limits, 50_000) == pytest.approx(30.0, abs=0.2)


async def test_a_reading_never_raises_a_bucket_above_the_fleet_s_own_level(redis_client: Redis) -> None:
    limits = limiter(redis_client)
    await grant_of(limits, 40_000)
    grant = await grant_of(limits, 100)
    before = await input_wait(limits, 50_000)
    await limits.fold(grant, inputs(remaining=59_000))
    assert await input_wait(limits, 50_000) == pytest.approx(before, abs=0.1)


async def test_what_the_fleet_spent_after_the_snapshot_is_taken_off_the_provider_s_figure(
    redis_client: Redis,
) -> None:
    limits = limiter(redis_client)
    grant = await grant_of(limits, 100)
    snapshot = inputs(remaining=30_000)
    await grant_of(limits, 10_000)  # sent after the response's snapshot: the provider did not count it
    await limits.fold(grant, snapshot)
    assert await input_wait(limits, 50_000) == pytest.approx(30.0, abs=0.2)  # 20,000 left, not 30,000


async def test_a_snapshot_read_late_counts_what_the_provider_refilled_by_its_reset_time(
    redis_client: Redis,
) -> None:
    limits = limiter(redis_client)
    grant = await grant_of(limits)
    # Remaining 0 of 60,000, full again in 6 s: the provider refills 10,000 a second.
    reading = inputs(remaining=0, reset_in=6.0)
    await asyncio.sleep(0.5)
    await limits.fold(grant, reading)
    # About 5,000 refilled by now (0.5 s after the snapshot); ours refills at 970 a second from there.
    wait = await input_wait(limits, 10_000)
    assert 4.5 < wait < 5.6


async def test_others_spending_from_the_account_is_learnt_and_slows_the_refill(redis_client: Redis) -> None:
    limits = limiter(redis_client, window=0.5)
    level = 30_000
    for _ in range(8):  # another application spends 600 tokens a second: the provider gains only 400
        await limits.fold(await grant_of(limits, 0), inputs(remaining=level))
        await asyncio.sleep(0.25)
        level += 100
    learnt = float(await redis_client.hget(names.llm_buckets(MODEL), "if") or 0)  # type: ignore[misc]
    assert 350 < learnt < 750
    # From a lowered level, our bucket now gains about 400 a second, not 1,000.
    await limits.fold(await grant_of(limits, 0), inputs(remaining=level))
    assert await input_wait(limits, level + 4_000) == pytest.approx(4_000 / (1_000 - learnt), rel=0.1)


async def test_a_quiet_account_teaches_nothing_and_leaves_the_refill_alone(redis_client: Redis) -> None:
    limits = limiter(redis_client, window=0.5)
    level = 30_000.0
    for _ in range(6):  # the provider refills at 1,000 a second and nobody else spends
        await limits.fold(await grant_of(limits, 0), inputs(remaining=int(level)))
        await asyncio.sleep(0.2)
        level += 200
    learnt = float(await redis_client.hget(names.llm_buckets(MODEL), "if") or 0)  # type: ignore[misc]
    assert learnt < 60  # noise of the readings' timing, a few percent of the rate at most


async def test_with_headroom_the_fleet_leaves_that_share_of_the_provider_s_bucket_alone(
    redis_client: Redis,
) -> None:
    settings = Settings(_env_file=None, llm_input_tokens_per_minute=ITPM, llm_limit_headroom=0.9)
    limits = LlmLimiter(redis_client, limits_from(settings))
    assert limits.limits.headroom == 0.9
    grant = await grant_of(limits)
    await limits.fold(grant, inputs(remaining=20_000))
    # 20,000 left, 6,000 of them (10% of the limit) kept back; ours refills 900 a second.
    assert await input_wait(limits, 50_000) == pytest.approx(36_000 / 900, abs=0.3)
