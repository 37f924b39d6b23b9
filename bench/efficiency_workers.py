"""Worker settings for the scheduling benchmark, run as real processes with ``arq``.

``Ours``: this service's worker machinery (wake-ups, the store's START/ADVANCE/COMPLETE scripts),
running a job that stands for a 50 ms model call with two progress events.
``RawArq``: plain arq with the same 50 ms job and ``poll_delay`` from ``RAW_ARQ_POLL_DELAY``.
Both count finished jobs in ``bench:done`` and, for pickup latency, push start delays to
``bench:pickup``.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from service.core.settings import Settings
from service.store.arq_wire import JOB_FUNCTION, dumps_job, loads_job
from service.store.connection import open_redis
from service.store.job_types import Retention
from service.store.jobs import JobStore
from service.store.policies import start_policy
from service.telemetry.metrics import MetricsBuffer
from service.worker.lifecycle import startup
from service.worker.options import worker_options

MODEL_CALL_SECONDS = 0.05
RESULT = {"model": "bench", "inputTokens": 10, "outputTokens": 5, "tokensUsed": 15}


async def model_call_job(ctx: dict[str, Any], job_id: str) -> None:
    jobs: JobStore = ctx["deps"].jobs
    settings: Settings = ctx["settings"]
    started = await jobs.start(job_id, start_policy(settings), stage="summarizing", progress=30)
    if not started.proceed:
        return
    record = started.record
    await ctx["redis"].rpush("bench:pickup", int(record["started_ms"]) - int(record["created_ms"]))
    await asyncio.sleep(MODEL_CALL_SECONDS / 2)
    await jobs.advance(job_id, stage="summarizing", progress=50)
    await asyncio.sleep(MODEL_CALL_SECONDS / 2)
    await jobs.advance(job_id, stage="summarizing", progress=69)
    await jobs.complete(
        job_id, RESULT, pdf_key="reports/x.pdf", retention=Retention(3600, 100_000), period="bench"
    )
    await ctx["redis"].incr("bench:done")


async def ours_startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis = open_redis(settings.redis_url, fail_fast=False)
    ctx["deps"] = SimpleNamespace(jobs=JobStore(redis), metrics=MetricsBuffer())
    await startup(ctx)


def _ours() -> dict[str, Any]:
    options = worker_options(Settings(), standalone=False)
    options["functions"] = [func(model_call_job, name=JOB_FUNCTION)]
    options["on_startup"] = ours_startup
    options["cron_jobs"] = []
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
    "job_serializer": dumps_job,
    "job_deserializer": loads_job,
}
Ours = _ours() if os.environ.get("BENCH_WORKER") == "ours" else {}
