"""The shared LLM limiter against a real Redis: buckets, refill, reconcile, release, pauses, concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from service.core.errors import Unavailable
from service.core.settings import Settings
from service.store import names
from service.store.connection import open_redis
from service.store.limiter import Grant, LlmLimiter, LlmLimits, limits_from

MODEL = "claude-test"
BIG = 10_000_000  # a limit that never binds in these tests


@pytest.fixture
async def redis_pair(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two clients with their own connection pools, as two worker processes would have."""
    first, second = open_redis(redis_url, fail_fast=False), open_redis(redis_url, fail_fast=False)
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.fixture
def redis_client(redis_pair: tuple[Redis, Redis]) -> Redis:
    return redis_pair[0]


def limiter(client: Redis, rpm: int = BIG, itpm: int = BIG, otpm: int = BIG) -> LlmLimiter:
    return LlmLimiter(client, LlmLimits(rpm, itpm, otpm))


def wait_of(outcome: Grant | float) -> float:
    assert isinstance(outcome, float), f"expected a wait, got {outcome}"
    return outcome


async def test_grants_until_the_request_bucket_is_empty_then_answers_the_wait(redis_client: Redis) -> None:
    limits = limiter(redis_client, rpm=3)
    for _ in range(3):
        assert await limits.acquire(MODEL, 10, 10) == Grant(MODEL, 10, 10)
    # One request comes back every 60 / 3 = 20 s, counted from the first take.
    assert 19.0 < wait_of(await limits.acquire(MODEL, 10, 10)) <= 20.0


@pytest.mark.parametrize(
    ("limits", "fill", "probe", "expected_wait", "still_fits"),
    [
        ((2, BIG, BIG), [(0, 0), (0, 0)], (0, 0), 30.0, None),  # 2 requests, then one every 30 s
        ((BIG, 600, BIG), [(600, 0)], (60, 0), 6.0, (0, 600)),  # 60 input tokens at 10 a second
        ((BIG, BIG, 600), [(0, 600)], (0, 60), 6.0, (600, 0)),  # the same for output
    ],
    ids=["requests", "input_tokens", "output_tokens"],
)
async def test_each_limit_binds_on_its_own(
    redis_client: Redis,
    limits: tuple[int, int, int],
    fill: list[tuple[int, int]],
    probe: tuple[int, int],
    expected_wait: float,
    still_fits: tuple[int, int] | None,
) -> None:
    limiter_ = LlmLimiter(redis_client, LlmLimits(*limits))
    for size in fill:
        assert isinstance(await limiter_.acquire(MODEL, *size), Grant)
    assert expected_wait - 0.5 < wait_of(await limiter_.acquire(MODEL, *probe)) <= expected_wait
    if still_fits is not None:  # the other buckets are untouched: a request needing only them fits
        assert isinstance(await limiter_.acquire(MODEL, *still_fits), Grant)


async def test_a_refused_acquire_takes_nothing(redis_client: Redis) -> None:
    limits = limiter(redis_client, rpm=2, itpm=600)
    assert isinstance(await limits.acquire(MODEL, 500, 0), Grant)
    assert isinstance(await limits.acquire(MODEL, 500, 0), float)  # input does not fit: nothing taken
    assert isinstance(await limits.acquire(MODEL, 90, 0), Grant)  # so the second request is still there


async def test_buckets_refill_continuously(redis_client: Redis) -> None:
    limits = limiter(redis_client, itpm=6000)  # 100 tokens a second
    assert isinstance(await limits.acquire(MODEL, 5950, 0), Grant)
    wait = wait_of(await limits.acquire(MODEL, 100, 0))
    assert 0.4 < wait <= 0.5
    await asyncio.sleep(wait + 0.02)
    assert isinstance(await limits.acquire(MODEL, 100, 0), Grant)


async def test_reconcile_gives_back_what_was_not_used(redis_client: Redis) -> None:
    limits = limiter(redis_client, itpm=1000, otpm=1000)
    grant = await limits.acquire(MODEL, 900, 800)  # the output is reserved from max_tokens
    assert isinstance(grant, Grant)
    assert isinstance(await limits.acquire(MODEL, 0, 900), float)
    await limits.reconcile(grant, input_tokens=100, output_tokens=100)
    assert isinstance(await limits.acquire(MODEL, 900, 900), Grant)


async def test_reconcile_takes_more_and_may_drive_a_bucket_below_zero(redis_client: Redis) -> None:
    limits = limiter(redis_client, otpm=600)  # 10 tokens a second
    grant = await limits.acquire(MODEL, 0, 100)
    assert isinstance(grant, Grant)
    await limits.reconcile(grant, input_tokens=0, output_tokens=1100)  # 500 tokens in debt
    # In debt, a bucket admits nothing, not even a request with no output: 50 s to get back to zero.
    assert 49.5 < await limits.wait_time(MODEL) <= 50.0
    assert 49.5 < wait_of(await limits.acquire(MODEL, 0, 0)) <= 50.0


async def test_reconcile_never_fills_a_bucket_above_its_capacity(redis_client: Redis) -> None:
    limits = limiter(redis_client, itpm=1000)
    grant = await limits.acquire(MODEL, 100, 0)
    assert isinstance(grant, Grant)
    await limits.reconcile(grant, input_tokens=0, output_tokens=0)  # the estimate was 100 too high
    await limits.reconcile(grant, input_tokens=0, output_tokens=0)  # a buggy second call adds nothing
    assert isinstance(await limits.acquire(MODEL, 1000, 0), Grant)
    assert isinstance(await limits.acquire(MODEL, 10, 0), float)


async def test_release_gives_back_the_output_and_keeps_the_request_and_input(redis_client: Redis) -> None:
    limits = limiter(redis_client, rpm=2, itpm=1000, otpm=1000)
    grant = await limits.acquire(MODEL, 600, 1000)
    assert isinstance(grant, Grant)
    assert isinstance(await limits.acquire(MODEL, 0, 1000), float)
    await limits.release(grant)
    assert isinstance(await limits.acquire(MODEL, 400, 1000), Grant)  # output back; 400 input left
    assert 29.0 < wait_of(await limits.acquire(MODEL, 0, 0)) <= 30.0  # both requests stay spent


async def test_release_of_a_call_never_sent_gives_everything_back(redis_client: Redis) -> None:
    limits = limiter(redis_client, rpm=1, itpm=1000, otpm=1000)
    grant = await limits.acquire(MODEL, 1000, 1000)
    assert isinstance(grant, Grant)
    await limits.release(grant, sent=False)
    assert isinstance(await limits.acquire(MODEL, 1000, 1000), Grant)


async def test_a_pause_is_shared_and_keeps_the_later_deadline(redis_pair: tuple[Redis, Redis]) -> None:
    first, second = limiter(redis_pair[0]), limiter(redis_pair[1])
    await first.pause(MODEL, 5)
    assert 4.5 < wait_of(await second.acquire(MODEL, 1, 1)) <= 5.0
    await second.pause(MODEL, 1)  # an earlier deadline does not shorten the pause in place
    assert 4.5 < await first.wait_time(MODEL) <= 5.0
    await second.pause(MODEL, 8)
    assert 7.5 < await first.wait_time(MODEL) <= 8.0
    assert isinstance(await first.acquire("claude-other", 1, 1), Grant)  # only that model waits


async def test_a_pause_ends_by_itself(redis_client: Redis) -> None:
    limits = limiter(redis_client)
    await limits.pause(MODEL, 0.2)
    assert isinstance(await limits.acquire(MODEL, 1, 1), float)
    await asyncio.sleep(0.25)
    assert isinstance(await limits.acquire(MODEL, 1, 1), Grant)


@pytest.mark.parametrize(
    ("limits", "size", "expected"),
    [
        ((50, BIG, BIG), (0, 0), 50),  # next request after 1.2 s
        ((BIG, 1000, BIG), (9, 0), 111),  # 999 taken; 9 more tokens after 0.48 s
        ((BIG, BIG, 1000), (0, 9), 111),
    ],
    ids=["requests", "input_tokens", "output_tokens"],
)
async def test_concurrent_acquirers_in_two_processes_never_over_grant(
    redis_pair: tuple[Redis, Redis], limits: tuple[int, int, int], size: tuple[int, int], expected: int
) -> None:
    limiters = [LlmLimiter(client, LlmLimits(*limits)) for client in redis_pair]
    started = time.monotonic()
    outcomes = await asyncio.gather(*(limiters[n % 2].acquire(MODEL, *size) for n in range(400)))
    elapsed = time.monotonic() - started
    granted = sum(isinstance(outcome, Grant) for outcome in outcomes)
    # Exact when the 400 calls take under 0.4 s; on a busy machine the buckets refill meanwhile, by at
    # most the limit's rate over the time taken (one grant of `size` per refill of that much).
    binding = min(limits)
    unit = max(size) or 1
    refilled = int(binding / 60 * max(0.0, elapsed - 0.4) / unit) + (1 if elapsed >= 0.4 else 0)
    assert expected <= granted <= expected + refilled


async def test_a_request_larger_than_a_bucket_gets_through_once_it_is_full(redis_client: Redis) -> None:
    limits = limiter(redis_client, itpm=1000)  # 1000 / 60 ≈ 16.7 tokens a second
    assert isinstance(await limits.acquire(MODEL, 1, 0), Grant)
    wait = wait_of(await limits.acquire(MODEL, 5000, 0))  # waits only until the bucket is full again
    assert wait <= 0.06
    await asyncio.sleep(wait + 0.01)
    assert isinstance(await limits.acquire(MODEL, 5000, 0), Grant)
    # The bucket is now 4000 in debt: nothing for 4000 / 16.7 = 240 s.
    assert 239.0 < wait_of(await limits.acquire(MODEL, 0, 0)) <= 240.0


async def test_models_have_their_own_buckets(redis_client: Redis) -> None:
    limits = limiter(redis_client, rpm=1)
    assert isinstance(await limits.acquire("claude-a", 0, 0), Grant)
    assert isinstance(await limits.acquire("claude-a", 0, 0), float)
    assert isinstance(await limits.acquire("claude-b", 0, 0), Grant)


async def test_the_state_expires_once_every_bucket_is_full_again(redis_client: Redis) -> None:
    limits = limiter(redis_client, rpm=60, itpm=600, otpm=BIG)
    await limits.acquire(MODEL, 10, 0)  # 1 s to refill a request, 1 s for 10 input tokens
    assert 1900 < await redis_client.pttl(names.llm_buckets(MODEL)) <= 2000
    await limits.pause(MODEL, 30)
    assert 30_900 < await redis_client.pttl(names.llm_buckets(MODEL)) <= 31_000


def test_limits_come_from_settings_a_few_percent_under_the_providers() -> None:
    settings = Settings(_env_file=None)
    assert limits_from(settings) == LlmLimits(29, 29_100, 7_760)  # 97%, rounded down
    exact = Settings(_env_file=None, llm_limit_headroom=1.0)
    assert limits_from(exact) == LlmLimits(30, 30_000, 8_000)
    with pytest.raises(ValueError, match="at least 1"):
        LlmLimits(0, 1, 1)


async def test_an_unreachable_redis_is_unavailable() -> None:
    client = open_redis("redis://127.0.0.1:1/0", fail_fast=True)
    try:
        with pytest.raises(Unavailable):
            await limiter(client).acquire(MODEL, 1, 1)
    finally:
        await client.aclose()
