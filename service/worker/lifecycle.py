"""The worker process's life, as arq's hooks: start-up (the report queue's runtime, drain,
resources, gauges, the webhook delivery loop, the batch lane's driver) and shutdown."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import structlog
from arq.worker import Worker

from service.core.settings import Settings
from service.store import names
from service.store.wake import WorkMarker
from service.telemetry.logs import configure_logging
from service.telemetry.loop_lag import LoopLagMonitor, calm_garbage_collector
from service.telemetry.metrics import MetricsBuffer
from service.worker.batch_driver import BatchDriver
from service.worker.cron_loop import drive_cron_loop, running_worker
from service.worker.deliveries import ATTEMPT_GRACE_SECONDS, DeliveryLoop
from service.worker.drain import install_drain
from service.worker.pipeline import run_claimed
from service.worker.resources import open_worker_deps
from service.worker.runtime import WorkerRuntime

log = structlog.get_logger("service.worker")


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    worker = running_worker()
    drive_cron_loop(worker)
    if ctx.get("standalone", True):
        # Here, not at import: arq's CLI installs its own logging config after importing the settings.
        configure_logging(settings, process="worker")
    if "deps" not in ctx:  # tests may hand in their own
        stack = AsyncExitStack()
        ctx["deps"] = await stack.enter_async_context(open_worker_deps(settings))
        ctx["exit_stack"] = stack
    deps = ctx["deps"]
    listeners = {}
    if deps.webhooks is not None:
        ctx["deliveries"] = DeliveryLoop(deps.webhooks)
        ctx["deliveries"].start()
        listeners[names.WEBHOOKS_CHANNEL] = lambda _: deps.webhooks.wake.set()
    if deps.batches is not None and deps.batch_store is not None:
        ctx["batch_driver"] = BatchDriver(deps)  # drives the fleet's batches while it holds the lease
        ctx["batch_driver"].start()
    marker = WorkMarker(settings.redis_url, settings.worker_idle_poll_seconds)
    runtime = WorkerRuntime(deps, marker, run_job=ctx.get("run_job", run_claimed), listeners=listeners)
    ctx.update(runtime=runtime, marker=marker)
    ctx["runtime_task"] = start_runtime(worker, runtime)
    if ctx.get("standalone", True):
        install_drain(worker, runtime, settings.worker_grace_seconds)
    ctx["loop_lag"] = watch_worker(runtime, deps.metrics, settings)
    calm_garbage_collector()
    log.info("worker_started", concurrency=settings.worker_concurrency, offline=settings.offline)


def start_runtime(worker: Worker, runtime: WorkerRuntime) -> asyncio.Task[None]:
    """The report queue's loop; if it ever dies of a bug, the process goes with it (the platform
    restarts it) rather than living on without taking jobs."""

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("worker_runtime_died", exc_info=task.exception())
        if worker.main_task is not None:
            worker.main_task.cancel()

    task = asyncio.create_task(runtime.run(), name="report-queue")
    task.add_done_callback(ended)
    return task


def watch_worker(runtime: WorkerRuntime, metrics: MetricsBuffer, settings: Settings) -> LoopLagMonitor:
    """The loop-lag monitor, and the gauges this process reports with every metrics flush."""
    lag = LoopLagMonitor(report_every=settings.loop_lag_report_seconds)
    lag.start()

    def gauges(buffer: MetricsBuffer) -> None:
        buffer.set_gauge("worker_jobs_in_flight", runtime.in_flight, worker=buffer.instance)
        p99 = lag.summary()["p99_ms"] / 1000
        buffer.set_gauge("event_loop_lag_seconds", p99, process="worker", node=buffer.instance)

    metrics.gauge_sources.append(gauges)
    return lag


async def shutdown(ctx: dict[str, Any]) -> None:
    runtime: WorkerRuntime | None = ctx.get("runtime")
    task: asyncio.Task[None] | None = ctx.get("runtime_task")
    if runtime is not None and task is not None and not task.done():
        await runtime.drain(0)  # arq stopped without our drain: hand back whatever runs
        await asyncio.wait([task], timeout=5)
    driver: BatchDriver | None = ctx.get("batch_driver")
    if driver is not None:
        await driver.stop()
    deliveries: DeliveryLoop | None = ctx.get("deliveries")
    if deliveries is not None:
        # Deliveries ran on through the drain; one still under way gets a few seconds more.
        await deliveries.stop(grace=min(ATTEMPT_GRACE_SECONDS, ctx["settings"].worker_grace_seconds))
    loop_lag: LoopLagMonitor | None = ctx.get("loop_lag")
    if loop_lag is not None:
        await loop_lag.stop()
    if runtime is not None:
        await runtime.close()
    marker: WorkMarker | None = ctx.get("marker")
    if marker is not None:
        await marker.aclose()
    stack: AsyncExitStack | None = ctx.get("exit_stack")
    if stack is not None:
        await stack.aclose()
    log.info("worker_stopped")
