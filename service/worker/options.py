"""The arq side of the worker: its options, its resources, its job function, and graceful draining."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from arq import Retry, cron
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.core.settings import Settings
from service.inputs.fetch import InputFetcher, build_input_client
from service.inputs.source import InputSource
from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.base import Provider
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from service.storage.factory import storage_from
from service.store.connection import open_redis
from service.store.jobs import JobStore, dumps_job, loads_job
from service.store.limiter import LlmLimiter, limits_from
from service.store.policies import LEASE_MARGIN_SECONDS
from service.store.uploads import UploadStore
from service.telemetry.logs import configure_logging
from service.telemetry.loop_lag import LoopLagMonitor, calm_garbage_collector
from service.telemetry.metrics import MetricsBuffer
from service.worker.drain import install_drain
from service.worker.pipeline import RetryLater, WorkerDeps, run_report_job
from service.worker.poll_loop import WakeSignal, drive_poll_loop, running_worker

log = structlog.get_logger("service.worker.options")

# arq's own timeout is a backstop only: our pipeline times itself out first (and retries),
# and needs a moment after that to record the outcome.
_ARQ_TIMEOUT_MARGIN_S = 2
# A finished job's full event stream is kept this long for readers still catching up.
STREAM_REPLAY_SECONDS = 60


@asynccontextmanager
async def provider_for(settings: Settings) -> AsyncIterator[Provider]:
    if settings.offline:
        yield OfflineProvider()
        return
    client = build_anthropic_client(settings)
    try:
        yield AnthropicProvider(client)
    finally:
        await client.close()


@asynccontextmanager
async def open_worker_deps(settings: Settings) -> AsyncIterator[WorkerDeps]:
    """Every client a job needs, opened once per worker process and closed on shutdown."""
    async with AsyncExitStack() as stack:
        redis = open_redis(settings.redis_url, fail_fast=False)
        stack.push_async_callback(redis.aclose)
        input_client = build_input_client(settings)
        stack.push_async_callback(input_client.aclose)
        renderer = PdfRenderer(processes=1)
        storage = storage_from(settings)
        stack.push_async_callback(storage.aclose)
        stack.callback(renderer.close)
        metrics = MetricsBuffer()
        metrics.start(redis, every=settings.metrics_flush_seconds)
        stack.push_async_callback(metrics.stop, redis)
        yield WorkerDeps(
            settings=settings,
            jobs=JobStore(redis),
            inputs=InputSource(InputFetcher(input_client, settings), UploadStore(redis), storage),
            provider=await stack.enter_async_context(provider_for(settings)),
            renderer=renderer,
            storage=storage,
            limiter=None if settings.offline else LlmLimiter(redis, limits_from(settings)),
            metrics=metrics,
        )


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    worker = running_worker()
    # arq marks a running job "in progress" for its timeout + 10 s; a dead worker's job waits that
    # long. Ours: the same lease as the user's slot, so it runs again about JOB_TIMEOUT_SECONDS later.
    worker.in_progress_timeout_s = settings.job_timeout_seconds + LEASE_MARGIN_SECONDS
    wake = WakeSignal()
    wake.start(settings.redis_url)
    ctx["wake"] = wake
    drive_poll_loop(worker, wake, settings.worker_idle_poll_seconds)
    if ctx.get("standalone", True):
        # Here, not at import: arq's CLI installs its own logging config after importing the settings.
        configure_logging(settings, process="worker")
        install_drain(settings.worker_grace_seconds)
    if "deps" not in ctx:  # tests may hand in their own
        stack = AsyncExitStack()
        ctx["deps"] = await stack.enter_async_context(open_worker_deps(settings))
        ctx["exit_stack"] = stack
    ctx["loop_lag"] = watch_worker(worker, ctx["deps"].metrics, settings)
    calm_garbage_collector()
    log.info("worker_started", concurrency=settings.worker_concurrency, offline=settings.offline)


def watch_worker(worker: Worker, metrics: MetricsBuffer, settings: Settings) -> LoopLagMonitor:
    """The loop-lag monitor, and the gauges this process reports with every metrics flush."""
    lag = LoopLagMonitor(report_every=settings.loop_lag_report_seconds)
    lag.start()

    def gauges(buffer: MetricsBuffer) -> None:
        buffer.set_gauge("worker_jobs_in_flight", len(worker.job_tasks), worker=buffer.instance)
        p99 = lag.summary()["p99_ms"] / 1000
        buffer.set_gauge("event_loop_lag_seconds", p99, process="worker", node=buffer.instance)

    metrics.gauge_sources.append(gauges)
    return lag


async def shutdown(ctx: dict[str, Any]) -> None:
    for watcher in (ctx.get("wake"), ctx.get("loop_lag")):
        if watcher is not None:
            await watcher.stop()
    stack: AsyncExitStack | None = ctx.get("exit_stack")
    if stack is not None:
        await stack.aclose()
    log.info("worker_stopped")


async def job_ended(ctx: dict[str, Any]) -> None:
    """arq's after_job_end hook: a slot is free, so look for the next job now, not at the next poll."""
    ctx["wake"].event.set()


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
    """arq's poll loop dies on the first Redis error unless its commands retry: ride out a restart
    or failover of up to about half a minute, then let the platform restart the process."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_retries = 10
    redis_settings.retry_on_timeout = True
    redis_settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, BusyLoadingError]
    redis_settings.retry = RedisRetry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), 20)
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
