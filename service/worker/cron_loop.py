"""arq's poll loop, reduced to the periodic jobs arq still runs for us (``service.worker.options``).

The report queue is ours (``service.worker.runtime``); arq hosts the process and its cron. Left
alone, arq would poll its own queue every ``poll_delay`` for nothing: here each poll iteration is
followed by a sleep until the next cron run is due (or briefly, while a cron job it just enqueued
or is running needs it). A Redis outage pauses the loop with backoff instead of ending the worker.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog
from arq.worker import Worker

from service.store.connection import REDIS_DOWN

log = structlog.get_logger("service.worker.cron_loop")

BUSY_POLL_SECONDS = 0.5  # while arq has a cron job queued or running
LONGEST_SLEEP_SECONDS = 600.0


def running_worker() -> Worker:
    """The Worker whose ``main()`` is running us (``on_startup`` is awaited inside it).

    arq builds its Worker itself from ``worker_settings.WorkerSettings`` and hands hooks only a
    ctx dict, so the task's coroutine is the one reliable way back to it.
    """
    task = asyncio.current_task()
    coroutine = task.get_coro() if task is not None else None
    frame = getattr(coroutine, "cr_frame", None)
    worker = frame.f_locals.get("self") if frame is not None else None
    if not isinstance(worker, Worker):
        raise RuntimeError("running_worker() must be called from arq's on_startup hook")
    return worker


def seconds_to_next_cron(worker: Worker) -> float:
    runs = [job.next_run for job in worker.cron_jobs if job.next_run is not None]
    if not runs:
        return BUSY_POLL_SECONDS  # not computed yet: the next iteration does
    now = datetime.now(tz=worker.timezone) if worker.timezone else datetime.now()
    return max(BUSY_POLL_SECONDS, min(LONGEST_SLEEP_SECONDS, (min(runs) - now).total_seconds()))


def drive_cron_loop(worker: Worker) -> None:
    """Replaces the worker's poll iteration with: poll, then sleep until the next cron run."""
    iteration = worker._poll_iteration
    failures = 0

    async def iterate_then_sleep() -> None:
        nonlocal failures
        before = [job.next_run for job in worker.cron_jobs]
        try:
            await iteration()
            failures = 0
        except REDIS_DOWN as exc:
            failures += 1
            pause = min(5.0, 0.2 * 2 ** min(failures, 5))
            log.warning("redis_unreachable", error=type(exc).__name__, failures=failures, pause_s=pause)
            await asyncio.sleep(pause)
            return
        enqueued = before != [job.next_run for job in worker.cron_jobs]
        busy = enqueued or bool(worker.job_tasks) or bool(worker.tasks)
        await asyncio.sleep(BUSY_POLL_SECONDS if busy else seconds_to_next_cron(worker))

    worker._poll_iteration = iterate_then_sleep  # type: ignore[method-assign]  # arq offers no hook here
