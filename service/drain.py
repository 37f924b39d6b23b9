"""Graceful shutdown for the arq worker: stop taking jobs, let running ones finish, hand back the rest.

arq's own SIGTERM handling cancels running jobs at once (or after ``job_completion_wait``) and every
restart of a job then counts as a new try. We run arq with ``handle_signals=False`` and install
this instead: on SIGTERM or SIGINT the worker stops picking jobs immediately, in-flight jobs get
``WORKER_GRACE_SECONDS`` to finish, and whatever is still running is cancelled, which the pipeline
answers by putting the job back in the queue without spending an attempt (and a later attempt
resumes from the model-answer checkpoint). Then the worker exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog
from arq.worker import Worker

from service.store.connection import REDIS_DOWN

log = structlog.get_logger("service.drain")


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
        raise RuntimeError("install_drain() must be called from arq's on_startup hook")
    return worker


def install_drain(grace_seconds: float) -> None:
    worker = running_worker()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    def on_signal(signum: signal.Signals) -> None:
        if draining:
            log.info("drain_already_running", signal=signum.name)
            return
        worker.allow_pick_jobs = False
        log.info("drain_started", signal=signum.name, in_flight=len(worker.job_tasks), grace_s=grace_seconds)
        draining.append(loop.create_task(drain(worker, grace_seconds)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def drain(worker: Worker, grace_seconds: float) -> None:
    deadline = time.monotonic() + grace_seconds
    # Loop: a job arq was starting at the very moment of the signal joins job_tasks a moment later.
    while worker.job_tasks and (remaining := deadline - time.monotonic()) > 0:
        await asyncio.wait(set(worker.job_tasks.values()), timeout=remaining)
    leftover = list(worker.job_tasks.values())
    for task in leftover:
        task.cancel()  # the pipeline hands the job back to the queue
    # Let arq record each outcome (its run_job tasks) before the main loop goes away.
    runners = [task for task in worker.tasks.values() if not task.done()]
    if runners:
        await asyncio.wait(runners, timeout=10)
    log.info("drain_finished", handed_back=len(leftover))
    if worker.main_task is not None:
        worker.main_task.cancel()


def survive_redis_outages(worker: Worker) -> None:
    """Keeps arq's poll loop alive through a Redis restart or failover.

    arq lets the first connection error out of its poll loop end the worker, and redis-py's retries
    do not cover a pipeline that cannot get a connection. Wrapping the loop's one iteration turns an
    outage into a pause with backoff; the jobs it interrupted are picked up again once their
    in-progress marks expire, and the job record's state machine sorts out what already happened.
    """
    iteration = worker._poll_iteration
    failures = 0

    async def resilient_iteration() -> None:
        nonlocal failures
        try:
            await iteration()
            failures = 0
        except REDIS_DOWN as exc:
            failures += 1
            pause = min(5.0, 0.2 * 2 ** min(failures, 5))
            log.warning("redis_unreachable", error=type(exc).__name__, failures=failures, pause_s=pause)
            await asyncio.sleep(pause)

    worker._poll_iteration = resilient_iteration  # type: ignore[method-assign]  # arq offers no hook here
