"""arq's options for the worker (``worker_settings.WorkerSettings`` is exactly ``worker_options()``),
and the functions arq runs: the report job and the periodic sweep."""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry, cron
from arq.connections import RedisSettings

from service.core.settings import Settings
from service.store.arq_wire import dumps_job, loads_job
from service.store.connection import worker_retry_options
from service.worker.lifecycle import job_ended, shutdown, startup
from service.worker.outcomes import RetryLater
from service.worker.pipeline import run_report_job
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker")

# arq's own timeout is a backstop only: our pipeline times itself out first (and retries),
# and needs a moment after that to record the outcome.
_ARQ_TIMEOUT_MARGIN_S = 2
# A finished job's full event stream is kept this long for readers still catching up.
STREAM_REPLAY_SECONDS = 60


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


async def generate_report(ctx: dict[str, Any], job_id: str) -> str:
    """The arq job function: a thin shell around the pipeline."""
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        return await run_report_job(ctx["deps"], job_id)
    except RetryLater as retry:
        raise Retry(defer=retry.defer_seconds) from retry
    finally:
        structlog.contextvars.unbind_contextvars("job_id", "report_id", "user_id")


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
        "cron_jobs": [cron(sweep_storage, minute=set(range(0, 60, 10)), unique=True, timeout=300)],
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
