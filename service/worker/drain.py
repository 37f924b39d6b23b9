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

from service.worker.poll_loop import running_worker

log = structlog.get_logger("service.worker.drain")


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
