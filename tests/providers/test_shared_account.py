"""A provider account shared with another application: the fake enforces its input-token limit, the
test itself spends half of it by calling the fake directly, and our calls (real SDK, shared Redis
limiter folding the provider's headers) use the other half without collecting 429s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from service.providers.anthropic.provider import AnthropicProvider
from service.store.connection import open_redis
from service.store.limiter import LlmLimiter, LlmLimits
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_limits import FakeLimits
from tests.providers.limited_calls import Tally, limited_call
from tests.providers.support import MODEL, request_for

ITPM = 120_000  # the account's: 2,000 input tokens a second
OTHER_SHARE = 0.5
OTHER_CALL_TOKENS = 250
WARM_UP_S, MEASURE_S = 2.5, 7.5


class OtherApplication:
    """Spends ``OTHER_SHARE`` of the account at a steady pace with calls of its own, 429s or not."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self.admitted: list[tuple[float, int]] = []
        self.refused = 0

    async def drain(self) -> None:
        """One huge call takes the full bucket the account starts with, as a busy account has none."""
        await self._send(ITPM - 1000)

    async def run(self, seconds: float) -> None:
        pace = OTHER_CALL_TOKENS / (ITPM / 60 * OTHER_SHARE)
        deadline, next_at = time.monotonic() + seconds, time.monotonic()
        while next_at < deadline:
            await self._send(OTHER_CALL_TOKENS)
            next_at += pace
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _send(self, tokens: int) -> None:
        body = {
            "model": MODEL,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "x" * (4 * tokens)}],
        }
        response = await self._http.post("/v1/messages", json=body)
        if response.status_code == 429:
            self.refused += 1
        else:
            self.admitted.append((time.monotonic(), tokens))


@pytest.fixture
async def other(fake: FakeAnthropic) -> AsyncIterator[OtherApplication]:
    headers = {"x-api-key": "sk-ant-other-application", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=headers, timeout=30) as http:
        yield OtherApplication(http)


async def test_our_calls_use_what_another_application_leaves_without_collecting_429s(
    fake: FakeAnthropic, provider: AnthropicProvider, other: OtherApplication, redis_url: str
) -> None:
    fake.limits = FakeLimits(input_tokens_per_minute=ITPM)
    redis = open_redis(redis_url, fail_fast=False)
    limiter = LlmLimiter(redis, LlmLimits(100_000, int(ITPM * 0.97), 100_000_000, headroom=0.97))
    request = request_for(max_tokens=200)
    input_tokens = await provider.count_input_tokens(request)
    ours, answered_at, started = Tally(), list[tuple[float, int]](), time.monotonic()
    await other.drain()

    async def fleet_slot() -> None:
        while time.monotonic() - started < WARM_UP_S + MEASURE_S:
            if await limited_call(limiter, provider, request, input_tokens, ours) is not None:
                answered_at.append((time.monotonic(), input_tokens))

    try:
        throttled_at_warm_up = 0

        async def mark_warm_up() -> None:
            nonlocal throttled_at_warm_up
            await asyncio.sleep(WARM_UP_S)
            throttled_at_warm_up = ours.throttled

        await asyncio.gather(
            other.run(WARM_UP_S + MEASURE_S), mark_warm_up(), *[fleet_slot() for _ in range(6)]
        )
    finally:
        await redis.aclose()
    window = (started + WARM_UP_S, started + WARM_UP_S + MEASURE_S)
    theirs = sum(tokens for at, tokens in other.admitted if window[0] <= at <= window[1])
    mine = sum(tokens for at, tokens in answered_at if window[0] <= at <= window[1])
    left_for_us = ITPM / 60 * MEASURE_S - theirs
    share = mine / left_for_us
    assert theirs > 0.8 * ITPM / 60 * MEASURE_S * OTHER_SHARE  # the other application got its half
    assert share > 0.8, (mine, left_for_us)
    # Only the first contact may meet a 429 (the fleet's buckets full, the account's drained);
    # once the headers are folded in, neither we nor the other application are refused.
    assert ours.throttled - throttled_at_warm_up <= 1 and other.refused <= 2
