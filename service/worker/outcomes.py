"""How an attempt ends, recorded in the job's state machine: completed (in the pipeline), failed with
a reason, retried with backoff, put back to wait for capacity without spending an attempt, or
handed back by a stopping worker. Every put-back names when the job is due again, in the same
script: the queue itself is the schedule.
"""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from service.core.errors import (
    JobTimedOut,
    PermanentJobError,
    ProviderUnavailable,
    TransientJobError,
    Unavailable,
)
from service.core.retry import backoff_seconds
from service.store.jobs import call_entries
from service.store.policies import budget_period, failed_retention
from service.worker.capacity import DEFAULT_PAUSE_S, CapacityWait, is_throttle
from service.worker.job_metrics import job_finished, job_retried
from service.worker.resources import WorkerDeps
from service.worker.stages import JobStopped

log = structlog.get_logger("service.worker.outcomes")

Record = dict[str, str]  # the job's record as START returned it (job_id, user_id, plan, ...)

# How long one try at recording an attempt's outcome may take.
SETTLE_DEADLINE_SECONDS = 3.0
# While Redis is unreachable the outcome is tried again, this long at most; past it the job's lease
# runs out and another worker restarts it (within JOB_TIMEOUT_SECONDS + 5 s of its start).
SETTLE_RETRY_SECONDS = 60.0


async def settle(deps: WorkerDeps, record: Record, attempts: int, exc: BaseException) -> None:
    """Records how an attempt that raised ``exc`` ends; re-raises a cancellation."""
    if isinstance(exc, asyncio.CancelledError):
        await asyncio.shield(hand_back(deps, record))
        raise exc
    if isinstance(exc, JobStopped):
        log.info("job_stopped", reason=str(exc))
        return
    give_up_at = time.monotonic() + SETTLE_RETRY_SECONDS
    tries = 0
    while True:
        try:
            async with asyncio.timeout(SETTLE_DEADLINE_SECONDS):
                return await _record_outcome(deps, record, attempts, exc)
        except (Unavailable, TimeoutError) as late:
            tries += 1
            wait = backoff_seconds(tries, base=0.5, cap=10.0)
            if time.monotonic() + wait > give_up_at:
                log.warning("job_outcome_unrecorded", error_type=type(exc).__name__, error=str(late)[:200])
                return
            await asyncio.sleep(wait)


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
        # Redis was unreachable mid-job: back to the queue without spending an attempt, once it
        # answers again (the checkpoint keeps any paid answer).
        log.warning("job_store_unavailable", error=str(exc))
        await hand_back(
            deps, record, "the job store was unreachable", backoff_seconds(attempts, base=1.0, cap=30.0)
        )
    elif isinstance(exc, Exception):
        # A bug, not the user's doing: fail clearly instead of leaving the job 'active' forever.
        log.error("job_crashed", error_type=type(exc).__name__, exc_info=exc)
        await fail_job(deps, record, "an internal error stopped the report; it has been logged", "internal")
    else:
        raise exc  # KeyboardInterrupt, SystemExit: the process is going away


async def wait_for_capacity(deps: WorkerDeps, record: Record, seconds: float, reason: str) -> None:
    """The provider is busy (our shared limits, or its own 429/529): back to the queue, no attempt spent."""
    defer = seconds + random.uniform(0, 1 + seconds / 10)  # spread the herd that waited together
    if await deps.jobs.requeue(record, reason, count_attempt=False, delay_seconds=defer):
        job_retried(deps.metrics, record, "throttled" if "429" in reason or "529" in reason else "capacity")
        log.info("job_waiting_for_capacity", reason=reason, defer_s=round(defer, 2))


async def retry_or_fail(
    deps: WorkerDeps, record: Record, attempts: int, error: TransientJobError, kind: str = "transient"
) -> None:
    settings = deps.settings
    if isinstance(error, ProviderUnavailable) and error.mid_answer:
        cuts = cut_calls(record)
        if cuts < settings.mid_answer_retries:
            return await restart_answer(deps, record, error, cuts)
    if is_throttle(error):
        pause = error.retry_after if error.retry_after is not None else DEFAULT_PAUSE_S
        return await wait_for_capacity(deps, record, pause, error.reason)
    if attempts >= settings.max_attempts:
        await fail_job(deps, record, f"{error.reason} (gave up after {attempts} attempts)", error.error_code)
        return
    defer = backoff_seconds(
        attempts,
        base=settings.retry_base_seconds,
        cap=settings.retry_max_seconds,
        retry_after=error.retry_after,
    )
    if await deps.jobs.requeue(record, error.reason, count_attempt=True, delay_seconds=defer):
        job_retried(deps.metrics, record, kind)
        log.warning("job_retry", reason=error.reason, attempts=attempts, defer_s=round(defer, 2))


def cut_calls(record: Record) -> int:
    """Calls of this job whose answer was cut after it began, in earlier attempts (the record START
    read holds the ledger as it was then)."""
    return sum(1 for entry in call_entries(record).values() if entry.get("outcome") == "cut")


async def restart_answer(deps: WorkerDeps, record: Record, error: TransientJobError, cuts: int) -> None:
    """The answer was cut after the provider's 200 (an ``overloaded_error`` event, a dropped
    connection): not the job's fault, so no attempt is spent. The next call waits out a backoff and
    goes through the shared limits like any other; its reservation tells the events the answer
    starts over (``restart``)."""
    settings = deps.settings
    defer = backoff_seconds(cuts + 1, base=settings.retry_base_seconds, cap=settings.retry_max_seconds)
    if await deps.jobs.requeue(record, error.reason, count_attempt=False, delay_seconds=defer):
        job_retried(deps.metrics, record, "mid_answer")
        log.warning("job_answer_restarting", reason=error.reason, cuts=cuts + 1, defer_s=round(defer, 2))


async def hand_back(
    deps: WorkerDeps, record: Record, reason: str = "handed back by a stopping worker", delay: float = 0.0
) -> None:
    """Back to the queue without spending an attempt, due after ``delay`` (a stopping worker's job
    is due at once, and wakes an idle worker); a job its user cancelled just leaves the queue."""
    if await deps.jobs.requeue(record, reason, count_attempt=False, delay_seconds=delay):
        job_retried(deps.metrics, record, "handed_back")
        log.info("job_handed_back", reason=reason)


async def fail_job(deps: WorkerDeps, record: Record, reason: str, code: str) -> None:
    settings = deps.settings
    failed = await deps.jobs.fail(
        record, reason, code=code, retention=failed_retention(settings), period=budget_period(settings)
    )
    if failed:
        job_finished(deps.metrics, record, "failed")
        log.warning("job_failed", reason=reason, code=code)


async def give_up_after_crashes(deps: WorkerDeps, record: Record) -> None:
    """START claimed a job blamed for too many of its workers' deaths: it fails, code worker_crashed."""
    deaths = int(record.get("crashes") or 0) + int(record.get("co_crashes") or 0)
    reason = f"the job stopped its worker {deaths} times (crash or out of memory); giving up"
    await fail_job(deps, record, reason, "worker_crashed")
