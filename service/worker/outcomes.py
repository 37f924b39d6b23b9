"""How an attempt ends, recorded in the job's state machine before arq hears of it: completed (in the
pipeline), failed with a reason, retried with backoff, put back to wait for capacity without
spending an attempt, or handed back by a stopping worker. ``RetryLater`` is the only exception
that leaves here for arq (as its ``Retry``), and cancellation, which arq must see.
"""

from __future__ import annotations

import asyncio
import json
import random

import structlog

from service.core.errors import JobTimedOut, PermanentJobError, TransientJobError, Unavailable
from service.core.retry import backoff_seconds
from service.store.policies import failed_retention
from service.worker.capacity import DEFAULT_PAUSE_S, CapacityWait, is_throttle
from service.worker.job_metrics import job_finished, job_retried
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker.outcomes")

Record = dict[str, str]  # the job's record as START returned it (job_id, user_id, plan, ...)


# How long recording an attempt's outcome may take: past it, the job is retried later (its record
# still says it runs, which the next start counts as a crash) rather than left to arq's timeout.
SETTLE_DEADLINE_SECONDS = 3.0


class RetryLater(Exception):
    """The job was put back in the queue; run it again after ``defer_seconds``."""

    def __init__(self, defer_seconds: float) -> None:
        super().__init__(f"retry in {defer_seconds:.1f}s")
        self.defer_seconds = defer_seconds


async def settle(deps: WorkerDeps, record: Record, attempts: int, exc: BaseException) -> None:
    """Records how an attempt that raised ``exc`` ends, within ``SETTLE_DEADLINE_SECONDS``;
    re-raises what arq must see."""
    if isinstance(exc, asyncio.CancelledError):
        await asyncio.shield(hand_back(deps, record))
        raise exc
    try:
        async with asyncio.timeout(SETTLE_DEADLINE_SECONDS):
            await _record_outcome(deps, record, attempts, exc)
    except TimeoutError as late:
        log.warning("job_outcome_late", error_type=type(exc).__name__)
        raise RetryLater(backoff_seconds(attempts, base=1.0, cap=30.0)) from late


async def _record_outcome(deps: WorkerDeps, record: Record, attempts: int, exc: BaseException) -> None:
    timeout = deps.settings.job_timeout_seconds
    if isinstance(exc, PermanentJobError):
        await fail_job(deps, record, exc.reason, exc.error_code)
    elif isinstance(exc, CapacityWait):
        await wait_for_capacity(deps, record, exc.seconds, "waiting for model capacity")
    elif isinstance(exc, TransientJobError):
        await retry_or_fail(deps, record, attempts, exc)
    elif isinstance(exc, TimeoutError):
        limit = f"the job ran longer than JOB_TIMEOUT_SECONDS ({timeout:g}s)"
        await retry_or_fail(deps, record, attempts, JobTimedOut(limit), kind="timeout")
    elif isinstance(exc, Unavailable):
        # Redis is down: nothing can be recorded now. arq keeps the job queued; when it starts again
        # the record still says 'active' and the restart is counted like a crash.
        log.warning("job_store_unavailable", error=str(exc))
        raise RetryLater(backoff_seconds(attempts, base=1.0, cap=30.0)) from exc
    elif isinstance(exc, Exception):
        # A bug, not the user's doing: fail clearly instead of leaving the job 'active' forever.
        log.error("job_crashed", error_type=type(exc).__name__, exc_info=exc)
        await fail_job(deps, record, "an internal error stopped the report; it has been logged", "internal")
    else:
        raise exc  # KeyboardInterrupt, SystemExit: the process is going away


async def wait_for_capacity(deps: WorkerDeps, record: Record, seconds: float, reason: str) -> None:
    """The provider is busy (our shared limits, or its own 429/529): back to the queue, no attempt spent."""
    await deps.jobs.requeue(record["job_id"], reason, count_attempt=False)
    job_retried(deps.metrics, record, "throttled" if "429" in reason or "529" in reason else "capacity")
    defer = seconds + random.uniform(0, 1 + seconds / 10)  # spread the herd that waited together
    log.info("job_waiting_for_capacity", reason=reason, defer_s=round(defer, 2))
    raise RetryLater(defer)


async def retry_or_fail(
    deps: WorkerDeps, record: Record, attempts: int, error: TransientJobError, kind: str = "transient"
) -> None:
    settings = deps.settings
    if is_throttle(error):
        pause = error.retry_after if error.retry_after is not None else DEFAULT_PAUSE_S
        await wait_for_capacity(deps, record, pause, error.reason)
    if attempts >= settings.max_attempts:
        await fail_job(deps, record, f"{error.reason} (gave up after {attempts} attempts)", error.error_code)
        return
    defer = backoff_seconds(
        attempts,
        base=settings.retry_base_seconds,
        cap=settings.retry_max_seconds,
        retry_after=error.retry_after,
    )
    await deps.jobs.requeue(record["job_id"], error.reason, count_attempt=True)
    job_retried(deps.metrics, record, kind)
    log.warning("job_retry", reason=error.reason, attempts=attempts, defer_s=round(defer, 2))
    raise RetryLater(defer)


async def hand_back(deps: WorkerDeps, record: Record) -> None:
    """Cancelled by a shutdown: back to the queue without spending an attempt (a user's cancel
    already marked the job cancelled, and then this changes nothing)."""
    if await deps.jobs.requeue(record["job_id"], "handed back by a stopping worker", count_attempt=False):
        job_retried(deps.metrics, record, "handed_back")
        log.info("job_handed_back")


async def fail_job(deps: WorkerDeps, record: Record, reason: str, code: str) -> None:
    retention = failed_retention(deps.settings)
    if await deps.jobs.fail(record["job_id"], reason, code=code, retention=retention):
        job_finished(deps.metrics, record, "failed")
        log.warning("job_failed", reason=reason)


def given_up_after_crashes(deps: WorkerDeps, record: Record) -> str:
    """START failed the job already (code worker_crashed), in the same step that counted the crash."""
    job_finished(deps.metrics, record, "failed")
    log.warning("job_failed", reason=json.loads(record.get("error") or "{}").get("reason", "worker_crashed"))
    return "failed"
