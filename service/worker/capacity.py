"""Calling the model within the limits every worker shares: reserve, call, then settle the account."""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from service.core.errors import ProviderRejected, ProviderUnavailable, Unavailable
from service.core.ratelimit import ProviderLimits
from service.providers.base import CallUsage, Provider, ReportAnswer, ReportRequest, rate_limited_input_tokens
from service.store.limiter import Grant, LlmLimiter
from service.telemetry.metrics import MetricsBuffer
from service.worker.billing import CallAccount

log = structlog.get_logger("service.worker.capacity")

# Waits up to this long are slept through in place; longer ones hand the job back to the queue
# (no attempt spent) so it does not hold a worker slot while the provider's minute refills.
INLINE_WAIT_LIMIT_S = 3.0
# The provider's "slow down" answers: they pause every worker for this model, and never cost a job
# one of its attempts.
THROTTLE_STATUSES = frozenset({429, 529})
DEFAULT_PAUSE_S = 5.0


class CapacityWait(Exception):
    """No room for this call for ``seconds``: put the job back without spending an attempt."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"waiting {seconds:.1f}s for model capacity")
        self.seconds = seconds


def is_throttle(error: Exception) -> bool:
    return isinstance(error, ProviderUnavailable) and error.status in THROTTLE_STATUSES


async def reserve(
    limiter: LlmLimiter, request: ReportRequest, input_tokens: int, metrics: MetricsBuffer
) -> Grant:
    started = time.monotonic()
    while True:
        granted = await limiter.acquire(request.model, input_tokens, request.max_tokens)
        if isinstance(granted, Grant):
            metrics.observe("llm_limiter_wait_seconds", time.monotonic() - started, model=request.model)
            return granted
        if granted > INLINE_WAIT_LIMIT_S:
            raise CapacityWait(granted)
        # Jitter: waiters told the same time would otherwise all come back at the same instant.
        await asyncio.sleep(granted + random.uniform(0, 0.05 + granted / 10))


async def capacity_for(
    limiter: LlmLimiter | None, request: ReportRequest, input_tokens: int, metrics: MetricsBuffer
) -> Grant | None:
    """Room for the call in the shared limits (None: the offline provider, which has no limits)."""
    return None if limiter is None else await reserve(limiter, request, input_tokens, metrics)


async def call_model(
    limiter: LlmLimiter | None,
    grant: Grant | None,
    provider: Provider,
    request: ReportRequest,
    account: CallAccount,
    metrics: MetricsBuffer,
    *,
    follow_provider: bool = True,
) -> ReportAnswer:
    """The paid call, within the room ``grant`` holds in the shared limits; on failure the grant is
    settled here, on success by the caller (``settle_grant``) once the answer is saved.
    ``follow_provider``: fold the response's rate-limit readings in (``LLM_FOLLOW_PROVIDER_LIMITS``)."""
    if limiter is None or grant is None:
        return await provider.write_report(request, account.listen)
    folded = not follow_provider

    async def listen(usage: CallUsage) -> None:
        nonlocal folded
        if not folded and usage.limits is not None:  # the response's first readings of the account
            folded = True
            await fold_readings(limiter, grant, usage.limits)
        await account.listen(usage)

    try:
        answer = await provider.write_report(request, listen)
    except ProviderRejected:
        metrics.inc("provider_errors_total", model=request.model, status="rejected")
        await settle_grant(limiter, grant, account.last)
        raise
    except ProviderUnavailable as exc:
        metrics.inc("provider_errors_total", model=request.model, status=str(exc.status or "network"))
        if exc.limits is not None and follow_provider:  # a 429 says what is left of the account
            await fold_readings(limiter, grant, exc.limits)
        await settle_grant(limiter, grant, account.last)
        if exc.status in THROTTLE_STATUSES:
            pause = exc.retry_after if exc.retry_after is not None else DEFAULT_PAUSE_S
            await limiter.pause(request.model, pause)
            log.warning("provider_throttled", status=exc.status, pause_s=pause, model=request.model)
        raise
    except BaseException:
        await asyncio.shield(settle_grant(limiter, grant, account.last))
        raise
    return answer


async def fold_readings(limiter: LlmLimiter, grant: Grant, limits: ProviderLimits) -> None:
    """The provider's rate-limit readings into the shared buckets (``LlmLimiter.fold``): another
    application spending from the same account slows the fleet instead of pushing it into 429s.
    Best effort, as settling is."""
    try:
        await limiter.fold(grant, limits)
    except Unavailable as exc:
        log.warning("limiter_fold_failed", error=str(exc))


async def settle_grant(limiter: LlmLimiter | None, grant: Grant | None, usage: CallUsage | None) -> None:
    """Corrects the shared buckets to what the call really took (a call cut short took what it had
    streamed; ``usage`` None: it was never sent); best effort: a Redis blip here costs at most one
    call's reservation."""
    if limiter is None or grant is None:
        return
    try:
        if usage is None:
            await limiter.release(grant, sent=False)
        elif rate_limited_input_tokens(usage) or usage.output_tokens:
            # The input bucket counts what the provider's limit counts: cache reads are free of it.
            await limiter.reconcile(grant, rate_limited_input_tokens(usage), usage.output_tokens)
        else:
            await limiter.release(grant)
    except Unavailable as exc:
        log.warning("limiter_settle_failed", error=str(exc))
