"""The LLM rate limiter every worker shares: token buckets for requests, input and output tokens per minute.

It mirrors how Anthropic counts, so that all workers on all hosts together stay under the provider's
limits while still using them to the full:

- three buckets per model (RPM, ITPM, OTPM), each holding one minute of its limit and refilled
  continuously (a token bucket, not fixed windows), so a full minute's budget may be spent at once;
- a request takes 1 request, its input tokens and its ``max_tokens`` of output when it starts, and
  ``reconcile`` corrects input and output to the real usage when it ends (the provider estimates
  output from ``max_tokens`` and adjusts it the same way);
- a 429/529 with a retry hint pauses the model for every worker (``pause``).

Each operation is one Lua step in Redis (``service.store.limiter_scripts``), timed by Redis's clock. The
limiter never waits or polls: ``acquire`` answers a ``Grant`` or the seconds to wait, and the caller
decides how to wait (sleep, or defer the job).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.core.settings import Settings
from service.store import limiter_scripts, names
from service.store.connection import RedisStore, translate_redis_errors

_MICROS = 1_000_000


@dataclass(frozen=True)
class LlmLimits:
    requests_per_minute: int
    input_tokens_per_minute: int
    output_tokens_per_minute: int

    def __post_init__(self) -> None:
        if min(self.requests_per_minute, self.input_tokens_per_minute, self.output_tokens_per_minute) < 1:
            raise ValueError("every LLM limit must be at least 1 per minute")


@dataclass(frozen=True)
class Grant:
    """What ``acquire`` reserved, to be reconciled (or released) once the call is over."""

    model: str
    input_tokens: int
    output_tokens: int


def limits_from(settings: Settings) -> LlmLimits:
    """The configured limits less ``LLM_LIMIT_HEADROOM``: our buckets and the provider's never start at
    quite the same instant (nor see a request at the same instant), so aiming a few percent under the
    limit keeps the provider from ever having to say 429."""
    share = settings.llm_limit_headroom

    def under(limit: int) -> int:
        return max(1, int(limit * share))

    return LlmLimits(
        requests_per_minute=under(settings.llm_requests_per_minute),
        input_tokens_per_minute=under(settings.llm_input_tokens_per_minute),
        output_tokens_per_minute=under(settings.llm_output_tokens_per_minute),
    )


def _check_tokens(*counts: int) -> None:
    if any(count < 0 for count in counts):
        raise ValueError("token counts cannot be negative")


class LlmLimiter(RedisStore):
    """Shared token buckets per model. One Redis round trip per operation; no loops, no client clocks.

    Oversized requests: a request needing more than a bucket can ever hold (say 40,000 input tokens
    under a 30,000 ITPM limit) is let through once that bucket is *full*, and drives it below zero;
    the debt then holds every other request for that model back until it is refilled. Over any
    stretch of time the rate stays within the limit, and the request never waits forever. (How the
    provider treats such a request is not documented; should it answer 429, the caller pauses as
    for any other.) Under a steady stream of small requests a bucket may seldom be full, so an
    oversized request can wait long: there is no queue, the first caller to find room wins.
    """

    def __init__(self, redis: Redis, limits: LlmLimits, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self.limits = limits
        self._caps = (
            limits.requests_per_minute,
            limits.input_tokens_per_minute,
            limits.output_tokens_per_minute,
        )
        self._acquire = redis.register_script(limiter_scripts.ACQUIRE)
        self._adjust = redis.register_script(limiter_scripts.ADJUST)
        self._pause = redis.register_script(limiter_scripts.PAUSE)

    @translate_redis_errors
    async def acquire(self, model: str, input_tokens: int, output_tokens: int) -> Grant | float:
        """Takes 1 request, ``input_tokens`` and ``output_tokens`` (reserve ``max_tokens``) if all three
        buckets allow it now and the model is not paused; else takes nothing and returns the seconds
        until it would fit (the longest of the three buckets' waits and the pause)."""
        _check_tokens(input_tokens, output_tokens)
        args: list[int | str] = [*self._caps, 1, input_tokens, output_tokens, "1"]
        granted, wait_us = await self._acquire(keys=[names.llm_buckets(model)], args=args)
        if int(granted) == 1:
            return Grant(model, input_tokens, output_tokens)
        return int(wait_us) / _MICROS

    @translate_redis_errors
    async def reconcile(self, grant: Grant, input_tokens: int, output_tokens: int) -> None:
        """Corrects the reservation to the real usage: unused tokens go back, extra ones are taken.

        Taking more may drive a bucket below zero, as the provider's own does: it refills from there.
        For a call that failed midway, pass what the provider reported or streamed so far: it counted
        the input and the output it generated."""
        _check_tokens(input_tokens, output_tokens)
        give = (0, grant.input_tokens - input_tokens, grant.output_tokens - output_tokens)
        await self._adjust(keys=[names.llm_buckets(grant.model)], args=[*self._caps, *give])

    @translate_redis_errors
    async def release(self, grant: Grant, *, sent: bool = True) -> None:
        """The call produced nothing: gives back the output reservation.

        ``sent=True`` (the default, and the safe side): the request may have reached the provider
        (a connection error, a timeout, a 429/529 or 5xx), which counts a request and its input as
        soon as it accepts it, so those stay spent. ``sent=False``: the call never left this process
        (cancelled before sending), so the request and its input tokens go back as well. A call that
        failed after output started streaming should use ``reconcile`` with the tokens seen instead."""
        give = (0, 0, grant.output_tokens) if sent else (1, grant.input_tokens, grant.output_tokens)
        await self._adjust(keys=[names.llm_buckets(grant.model)], args=[*self._caps, *give])

    @translate_redis_errors
    async def pause(self, model: str, seconds: float) -> None:
        """The provider said to wait (429/529 with ``retry-after`` or ratelimit reset headers): every
        worker holds off this model until then. A later pause already in place is kept."""
        if seconds > 0:
            await self._pause(keys=[names.llm_buckets(model)], args=[seconds])

    @translate_redis_errors
    async def wait_time(self, model: str, input_tokens: int = 0, output_tokens: int = 0) -> float:
        """Seconds until such a request would fit (0: now), taking nothing; for metrics and tests."""
        _check_tokens(input_tokens, output_tokens)
        args: list[int | str] = [*self._caps, 1, input_tokens, output_tokens, "0"]
        _, wait_us = await self._acquire(keys=[names.llm_buckets(model)], args=args)
        return int(wait_us) / _MICROS
