"""Calling the model within the limits every worker shares: reserve, call, then settle the account."""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from service.core.errors import ProviderRejected, ProviderUnavailable
from service.providers.base import OutputProgress, Provider, ReportAnswer, ReportRequest
from service.providers.prompt import request_input_tokens
from service.store.limiter import Grant, LlmLimiter
from service.telemetry.metrics import MetricsBuffer

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


async def reserve(limiter: LlmLimiter, request: ReportRequest, metrics: MetricsBuffer) -> Grant:
    estimate = request_input_tokens(request)
    started = time.monotonic()
    while True:
        granted = await limiter.acquire(request.model, estimate, request.max_tokens)
        if isinstance(granted, Grant):
            metrics.observe("llm_limiter_wait_seconds", time.monotonic() - started, model=request.model)
            return granted
        if granted > INLINE_WAIT_LIMIT_S:
            raise CapacityWait(granted)
        # Jitter: waiters told the same time would otherwise all come back at the same instant.
        await asyncio.sleep(granted + random.uniform(0, 0.05 + granted / 10))


async def call_model(
    limiter: LlmLimiter | None,
    provider: Provider,
    request: ReportRequest,
    on_output: OutputProgress,
    metrics: MetricsBuffer,
) -> ReportAnswer:
    """One paid call, inside the shared limits (no limiter: the offline provider costs nothing)."""
    if limiter is None:
        return await provider.write_report(request, on_output)
    grant = await reserve(limiter, request, metrics)
    try:
        answer = await provider.write_report(request, on_output)
    except ProviderRejected:
        metrics.inc("provider_errors_total", model=request.model, status="rejected")
        await limiter.release(grant)
        raise
    except ProviderUnavailable as exc:
        metrics.inc("provider_errors_total", model=request.model, status=str(exc.status or "network"))
        await limiter.release(grant)
        if exc.status in THROTTLE_STATUSES:
            pause = exc.retry_after if exc.retry_after is not None else DEFAULT_PAUSE_S
            await limiter.pause(request.model, pause)
            log.warning("provider_throttled", status=exc.status, pause_s=pause, model=request.model)
        raise
    except BaseException:
        await asyncio.shield(limiter.release(grant))
        raise
    await limiter.reconcile(grant, answer.input_tokens, answer.output_tokens)
    return answer
