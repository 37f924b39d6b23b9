"""Worker settings for the scheduling benchmark, run as real processes with ``arq``.

``Ours``: this service's worker machinery (its runtime over the report queue, the marker wake-up,
the store's START/ADVANCE/COMPLETE scripts), running a job that stands for a 50 ms model call with
two progress events. ``RawArq``: plain arq with the same 50 ms job and ``poll_delay`` from
``RAW_ARQ_POLL_DELAY``. Both count finished jobs in ``bench:done`` and, for pickup latency, push
start delays to ``bench:pickup``.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace
from typing import Any

from arq.connections import RedisSettings

from service.core.settings import Settings
from service.store.connection import open_redis
from service.store.job_types import Retention, StartOutcome
from service.store.jobs import JobStore
from service.telemetry.metrics import MetricsBuffer
from service.worker.lifecycle import startup
from service.worker.options import worker_options
from service.worker.running import RunningJobs

MODEL_CALL_SECONDS = 0.05
RESULT = {"model": "bench", "inputTokens": 10, "outputTokens": 5, "tokensUsed": 15}


async def model_call_job(deps: Any, started: StartOutcome) -> None:
    """What the runtime runs in place of the report pipeline: two progress steps and the end."""
    jobs: JobStore = deps.jobs
    record = started.record
    await jobs._redis.rpush("bench:pickup", int(record["started_ms"]) - int(record["created_ms"]))  # type: ignore[misc]
    await asyncio.sleep(MODEL_CALL_SECONDS / 2)
    await jobs.advance(record["job_id"], stage="summarizing", progress=50)
    await asyncio.sleep(MODEL_CALL_SECONDS / 2)
    await jobs.advance(record["job_id"], stage="summarizing", progress=69)
    await jobs.complete(
        record, RESULT, pdf_key="reports/x.pdf", retention=Retention(3600, 100_000), period="bench"
    )
    await jobs._redis.incr("bench:done")


async def ours_startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis = open_redis(settings.redis_url, fail_fast=False)
    ctx["deps"] = SimpleNamespace(
        settings=settings,
        jobs=JobStore(redis),
        metrics=MetricsBuffer(),
        running=RunningJobs(),
        calls=None,
        webhooks=None,
        batches=None,
        batch_store=None,
    )
    ctx["run_job"] = model_call_job
    await startup(ctx)


def _ours() -> dict[str, Any]:
    options = worker_options(Settings(), standalone=False)
    options["on_startup"] = ours_startup
    return options


async def sleep_job(ctx: dict[str, Any], enqueued_at: float) -> None:
    await ctx["redis"].rpush("bench:pickup", int((time.time() - enqueued_at) * 1000))
    await asyncio.sleep(MODEL_CALL_SECONDS)
    await ctx["redis"].incr("bench:done")


RawArq = {
    "functions": [sleep_job],
    "redis_settings": RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379/0")),
    "max_jobs": int(os.environ.get("WORKER_CONCURRENCY", "50")),
    "poll_delay": float(os.environ.get("RAW_ARQ_POLL_DELAY", "0.5")),
    "keep_result": 0,
}
Ours = _ours() if os.environ.get("BENCH_WORKER") == "ours" else {}
