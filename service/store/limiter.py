"""The LLM rate limiter every worker shares: token buckets for requests, input and output tokens per minute.

It mirrors how Anthropic counts, so that all workers on all hosts together stay under the provider's
limits while still using them to the full:

- three buckets per model (RPM, ITPM, OTPM), each holding one minute of its limit and refilled
  continuously (a token bucket, not fixed windows), so a full minute's budget may be spent at once;
- a request takes 1 request, its input tokens and its ``max_tokens`` of output when it starts, and
  ``reconcile`` corrects input and output to the real usage when it ends (the provider estimates
  output from ``max_tokens`` and adjusts it the same way);
- a 429/529 with a retry hint pauses the model for every worker (``pause``);
- the provider's own rate-limit headers, on every response, are folded in (``fold``): a bucket is
  lowered to what the provider says is left of the account, and what others spend from the same
  account is learnt as a rate that slows the refill, so the fleet makes room for another
  application instead of collecting 429s.

Each operation is one Lua step in Redis (``service.store.limiter_scripts``), timed by Redis's clock. The
limiter never waits or polls: ``acquire`` answers a ``Grant`` or the seconds to wait, and the caller
decides how to wait (sleep, or defer the job).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from service.core.ratelimit import LimitReading, ProviderLimits
from service.core.settings import Settings
from service.store import limiter_scripts, names
from service.store.connection import RedisStore, translate_redis_errors

_MICROS = 1_000_000
# Others' spending is averaged over this long: quick enough to follow an application that starts or
# stops, slow enough that one odd reading does not swing the fleet.
FOREIGN_WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class LlmLimits:
    requests_per_minute: int
    input_tokens_per_minute: int
    output_tokens_per_minute: int
    # The share of the provider's limits aimed for (``LLM_LIMIT_HEADROOM``; the three above are already
    # that share of the configured ones): ``fold`` leaves the rest of the provider's figures alone too.
    headroom: float = field(default=1.0, compare=False)

    def __post_init__(self) -> None:
        if min(self.requests_per_minute, self.input_tokens_per_minute, self.output_tokens_per_minute) < 1:
            raise ValueError("every LLM limit must be at least 1 per minute")


@dataclass(frozen=True)
class Grant:
    """What ``acquire`` reserved, to be reconciled (or released) once the call is over."""

    model: str
    input_tokens: int
    output_tokens: int
    # Where the fleet's books stood when it was taken (for ``fold``): the buckets' lifetime, the net
    # spend of each bucket so far, and when (this process's monotonic clock).
    epoch: str = field(default="", compare=False)
    spent: tuple[int, int, int] = field(default=(0, 0, 0), compare=False)
    granted_at: float = field(default=0.0, compare=False)


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
        headroom=share,
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

    def __init__(
        self,
        redis: Redis,
        limits: LlmLimits,
        *,
        deadline: float | None = None,
        foreign_window: float = FOREIGN_WINDOW_SECONDS,
    ) -> None:
        super().__init__(redis, deadline=deadline)
        self.limits = limits
        self._foreign_window = foreign_window
        self._caps = (
            limits.requests_per_minute,
            limits.input_tokens_per_minute,
            limits.output_tokens_per_minute,
        )
        self._acquire = redis.register_script(limiter_scripts.ACQUIRE)
        self._adjust = redis.register_script(limiter_scripts.ADJUST)
        self._pause = redis.register_script(limiter_scripts.PAUSE)
        self._fold = redis.register_script(limiter_scripts.FOLD)

    @translate_redis_errors
    async def acquire(self, model: str, input_tokens: int, output_tokens: int) -> Grant | float:
        """Takes 1 request, ``input_tokens`` and ``output_tokens`` (reserve ``max_tokens``) if all three
        buckets allow it now and the model is not paused; else takes nothing and returns the seconds
        until it would fit (the longest of the three buckets' waits and the pause)."""
        _check_tokens(input_tokens, output_tokens)
        args: list[int | str] = [*self._caps, 1, input_tokens, output_tokens, "1"]
        granted, wait_us, *books = await self._acquire(keys=[names.llm_buckets(model)], args=args)
        if int(granted) == 1:
            spent = (int(books[1]), int(books[2]), int(books[3]))
            return Grant(model, input_tokens, output_tokens, str(books[0]), spent, time.monotonic())
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
    async def fold(self, grant: Grant, limits: ProviderLimits) -> None:
        """Takes in what the provider said on the response to ``grant``'s call (a success's headers as
        soon as it starts, or a 429's): each bucket it reported is lowered to what the provider has
        left (never raised), and others' spending from the account is learnt. One round trip."""
        now = time.monotonic()
        args: list[int | float | str] = [*self._caps, max(0.0, now - grant.granted_at), grant.epoch]
        args += [*grant.spent, self._foreign_window, 1.0 - self.limits.headroom]
        for reading in limits.readings():
            args += _reading_args(reading, limits.read_at - grant.granted_at)
        await self._fold(keys=[names.llm_buckets(grant.model)], args=args)

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


def _reading_args(reading: LimitReading | None, read_after_grant: float) -> list[int | float]:
    """Remaining, limit, and seconds from the grant until the provider's bucket is full again."""
    if reading is None:
        return [-1, 0, 0.0]
    return [reading.remaining, reading.limit, max(0.0, reading.reset_in + read_after_grant)]
