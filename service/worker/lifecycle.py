"""The worker process's life, as arq's hooks: start-up (poll loop, drain, resources, gauges, the
webhook delivery loop), a job's end (wake the poll loop), and shutdown."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import structlog
from arq.worker import Worker

from service.core.settings import Settings
from service.store.policies import LEASE_MARGIN_SECONDS
from service.store.wake import WakeSignal
from service.telemetry.logs import configure_logging
from service.telemetry.loop_lag import LoopLagMonitor, calm_garbage_collector
from service.telemetry.metrics import MetricsBuffer
from service.worker.deliveries import ATTEMPT_GRACE_SECONDS, DeliveryLoop
from service.worker.drain import install_drain
from service.worker.poll_loop import drive_poll_loop, running_worker
from service.worker.resources import open_worker_deps

log = structlog.get_logger("service.worker")


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
    if ctx["deps"].webhooks is not None:
        ctx["deliveries"] = DeliveryLoop(ctx["deps"].webhooks)
        ctx["deliveries"].start()
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
    deliveries: DeliveryLoop | None = ctx.get("deliveries")
    if deliveries is not None:
        # Deliveries ran on through the drain; one still under way gets a few seconds more.
        await deliveries.stop(grace=min(ATTEMPT_GRACE_SECONDS, ctx["settings"].worker_grace_seconds))
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
