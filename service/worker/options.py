"""arq's options for the worker process (``worker_settings.WorkerSettings`` is exactly
``worker_options()``), and the periodic job arq runs for us.

arq hosts the process: its CLI, its start-up and shutdown hooks, its cron. The report queue is
ours (``service.worker.runtime``), started by the start-up hook: arq's own queue would cost a Redis
poll twice a second per idle worker and a dozen commands of bookkeeping per job (see
``bench/RESULTS.md``, "Redis cost").
"""

from __future__ import annotations

from typing import Any

import structlog
from arq import cron
from arq.connections import RedisSettings

from service.core.settings import Settings
from service.store.connection import worker_retry_options
from service.worker.lifecycle import shutdown, startup
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker")

SWEEP_TIMEOUT_SECONDS = 300


async def sweep_storage(ctx: dict[str, Any]) -> dict[str, int]:
    """Periodic (arq cron, one worker per run): PDFs and uploads past their retention go."""
    deps: WorkerDeps = ctx["deps"]
    settings = deps.settings
    removed = {
        "reports": await deps.storage.sweep("reports", settings.report_retention_seconds),
        "inputs": await deps.storage.sweep("inputs", settings.input_retention_seconds),
    }
    log.info("storage_swept", **removed)
    return removed


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
        "functions": [],
        "cron_jobs": [
            cron(sweep_storage, minute=set(range(0, 60, 10)), unique=True, timeout=SWEEP_TIMEOUT_SECONDS),
        ],
        "ctx": {"settings": settings, **ctx},
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": arq_redis_settings(settings),
        "max_jobs": 1,  # arq runs the sweep only
        "job_timeout": SWEEP_TIMEOUT_SECONDS,
        "keep_result": 0,
        "allow_abort_jobs": False,
        "handle_signals": False,  # ours drain the report queue: service.worker.drain
    }
