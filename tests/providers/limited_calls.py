"""One model call the way the worker makes it within the shared limits (``worker.capacity``):
reserve, call, fold the provider's rate-limit readings in as soon as they arrive (a success's first
event, or a 429), settle with what the input bucket counts; without a job around it."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import cast

from service.core.errors import ProviderUnavailable
from service.providers.base import CallUsage, Provider, ReportAnswer, ReportRequest, rate_limited_input_tokens
from service.store.limiter import Grant, LlmLimiter
from service.telemetry.metrics import MetricsBuffer
from service.worker.billing import CallAccount
from service.worker.capacity import call_model, settle_grant


@dataclass
class Tally:
    answered: int = 0
    throttled: int = 0  # the provider's 429s
    input_tokens: int = 0  # what the input limit counted for the answered calls


async def reserve(limiter: LlmLimiter, request: ReportRequest, input_tokens: int) -> Grant:
    while True:
        granted = await limiter.acquire(request.model, input_tokens, request.max_tokens)
        if isinstance(granted, Grant):
            return granted
        await asyncio.sleep(granted + random.uniform(0, 0.05 + granted / 10))


class UsageHeard:
    """What ``call_model`` needs of a job's ``CallAccount`` here: a listener, and the last usage."""

    def __init__(self) -> None:
        self.last = CallUsage(0, 0)

    async def listen(self, usage: CallUsage) -> None:
        self.last = usage


async def limited_call(
    limiter: LlmLimiter, provider: Provider, request: ReportRequest, input_tokens: int, tally: Tally
) -> ReportAnswer | None:
    """The call through the worker's own ``call_model`` (which folds the provider's readings in and,
    on a 429, settles and pauses the model), then settled as the worker settles it; None for a 429."""
    grant = await reserve(limiter, request, input_tokens)
    heard = UsageHeard()
    try:
        answer = await call_model(
            limiter, grant, provider, request, cast(CallAccount, heard), MetricsBuffer()
        )
    except ProviderUnavailable as exc:
        if exc.status == 429:
            tally.throttled += 1
            return None
        raise
    await settle_grant(limiter, grant, heard.last)
    tally.answered += 1
    tally.input_tokens += rate_limited_input_tokens(answer)
    return answer
