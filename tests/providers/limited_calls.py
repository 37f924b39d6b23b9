"""One model call the way the worker is to make it within the shared limits: reserve, call, fold the
provider's rate-limit readings in as soon as they arrive (a success's first event, or a 429), settle
with what the input bucket counts. For tests and benchmarks until the worker does it itself."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from service.core.errors import ProviderUnavailable
from service.providers.base import CallUsage, Provider, ReportAnswer, ReportRequest, rate_limited_input_tokens
from service.store.limiter import Grant, LlmLimiter


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


async def limited_call(
    limiter: LlmLimiter, provider: Provider, request: ReportRequest, input_tokens: int, tally: Tally
) -> ReportAnswer | None:
    """The call, or None when the provider said 429 (the model is then paused for its retry-after)."""
    grant = await reserve(limiter, request, input_tokens)
    folded = False

    async def listen(usage: CallUsage) -> None:
        nonlocal folded
        if usage.limits is not None and not folded:
            folded = True
            await limiter.fold(grant, usage.limits)

    try:
        answer = await provider.write_report(request, listen)
    except ProviderUnavailable as exc:
        if exc.limits is not None:
            await limiter.fold(grant, exc.limits)
        await limiter.release(grant)
        if exc.status == 429:
            tally.throttled += 1
            await limiter.pause(request.model, exc.retry_after or 1.0)
            return None
        raise
    await limiter.reconcile(grant, rate_limited_input_tokens(answer), answer.output_tokens)
    tally.answered += 1
    tally.input_tokens += rate_limited_input_tokens(answer)
    return answer
