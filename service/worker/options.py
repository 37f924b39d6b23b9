"""arq's options for the worker (``worker_settings.WorkerSettings`` is exactly ``worker_options()``),
and the functions arq runs: the report job and the periodic sweep."""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry, cron
from arq.connections import RedisSettings

from service.core.retry import backoff_seconds
from service.core.settings import Settings
from service.store.arq_wire import dumps_job, loads_job
from service.store.connection import worker_retry_options
from service.store.policies import failed_retention
from service.worker.lifecycle import job_ended, shutdown, startup
from service.worker.outcomes import SETTLE_DEADLINE_SECONDS, RetryLater
from service.worker.pipeline import run_report_job
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker")

# arq's own timeout is a backstop only: our pipeline times itself out first (and retries), then
# records the outcome within SETTLE_DEADLINE_SECONDS. arq's timeout ends a job outside our state
# machine, so it must never come first.
_ARQ_TIMEOUT_MARGIN_S = SETTLE_DEADLINE_SECONDS + 1
# A finished job's full event stream is kept this long for readers still catching up.
STREAM_REPLAY_SECONDS = 60
# The reaper looks at a live job again this long after it last found it well.
REAP_EVERY_SECONDS = 30
REAP_BATCH = 500
# A job the queue lost is put back this many times, then failed (something keeps losing it).
MAX_QUEUE_LOSSES = 3


async def sweep_storage(ctx: dict[str, Any]) -> dict[str, int]:
    """Periodic (arq cron, one worker per run): PDFs and uploads past their retention go, and
    finished jobs' event streams are compacted."""
    deps: WorkerDeps = ctx["deps"]
    settings = deps.settings
    removed = {
        "reports": await deps.storage.sweep("reports", settings.report_retention_seconds),
        "inputs": await deps.storage.sweep("inputs", settings.input_retention_seconds),
        "streams_compacted": 0,
    }
    while (compacted := await deps.jobs.compact_finished(STREAM_REPLAY_SECONDS)) > 0:
        removed["streams_compacted"] += compacted
    log.info("storage_swept", **removed)
    return removed


async def reap_lost_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    """Periodic (arq cron, one worker per run): jobs neither finished nor in arq's queue are put
    back in it (or failed, when something keeps losing them): no job stays queued or active without
    a worker that will run it."""
    deps: WorkerDeps = ctx["deps"]
    totals = {"looked_at": 0, "put_back": 0, "failed": 0}
    while True:
        looked, put_back, failed = await deps.jobs.reap(
            older_than_ms=REAP_EVERY_SECONDS * 1000,
            limit=REAP_BATCH,
            max_losses=MAX_QUEUE_LOSSES,
            failed=failed_retention(deps.settings),
        )
        for name, value in zip(totals, (looked, put_back, failed), strict=True):
            totals[name] += value
        if looked < REAP_BATCH:
            break
    if totals["put_back"] or totals["failed"]:
        log.warning("lost_jobs_reaped", **totals)
    return totals


async def generate_report(ctx: dict[str, Any], job_id: str) -> str:
    """The arq job function: a thin shell around the pipeline. Nothing but our own retry may reach
    arq: any other exception would end the job in arq's books while our record still says it runs."""
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        return await run_report_job(ctx["deps"], job_id)
    except RetryLater as retry:
        raise Retry(defer=retry.defer_seconds) from retry
    except Exception as exc:  # Redis gone at START, or while an outcome was being recorded
        log.warning("job_outcome_unrecorded", error_type=type(exc).__name__, error=str(exc)[:200])
        raise Retry(defer=backoff_seconds(1, base=2.0, cap=30.0)) from exc
    finally:
        structlog.contextvars.unbind_contextvars("job_id", "report_id", "user_id", "request_id")


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection, with retries that ride out a Redis restart (``worker_retry_options``)."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    for name, value in worker_retry_options().items():
        setattr(redis_settings, name, value)
    return redis_settings


def worker_options(settings: Settings, **ctx: Any) -> dict[str, Any]:
    """The keyword arguments for arq's Worker; ``worker_settings.WorkerSettings`` is exactly this.

    ``ctx`` extras are for tests: ``standalone=False`` leaves logging and signals alone, and
    ``deps=...`` hands in ready-made dependencies.
    """
    return {
        "functions": [generate_report],
        "cron_jobs": [
            cron(sweep_storage, minute=set(range(0, 60, 10)), unique=True, timeout=300),
            cron(reap_lost_jobs, second={0, REAP_EVERY_SECONDS}, unique=True, timeout=120),
        ],
        "ctx": {"settings": settings, **ctx},
        "on_startup": startup,
        "on_shutdown": shutdown,
        "after_job_end": job_ended,
        "redis_settings": arq_redis_settings(settings),
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_seconds + _ARQ_TIMEOUT_MARGIN_S,
        # Attempts are counted by the pipeline (a deploy's hand-back must not spend one), so arq's
        # own try counter, which grows on every start, must never be the one to fail a job.
        "max_tries": 1_000_000,
        "keep_result": 0,
        "allow_abort_jobs": True,
        "handle_signals": False,
        "poll_delay": 0,  # the wait between polls is ours: see service.worker.poll_loop
        "job_serializer": dumps_job,
        "job_deserializer": loads_job,
    }
