"""Graceful shutdown: stop taking jobs, let running ones finish, hand back the rest.

On SIGTERM or SIGINT the worker stops claiming jobs at once, in-flight jobs get
``WORKER_GRACE_SECONDS`` to finish, and whatever is still running is cancelled, which the pipeline
answers by putting the job back in the queue, due at once, without spending an attempt (a later
attempt resumes from the model-answer checkpoint). Then arq's main task ends and the worker exits 0.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from arq.worker import Worker

from service.worker.runtime import WorkerRuntime

log = structlog.get_logger("service.worker.drain")


def install_drain(worker: Worker, runtime: WorkerRuntime, grace_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    def on_signal(signum: signal.Signals) -> None:
        if draining:
            log.info("drain_already_running", signal=signum.name)
            return
        log.info("drain_started", signal=signum.name, in_flight=runtime.in_flight, grace_s=grace_seconds)
        draining.append(loop.create_task(drain(worker, runtime, grace_seconds)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def drain(worker: Worker, runtime: WorkerRuntime, grace_seconds: float) -> None:
    handed_back = await runtime.drain(grace_seconds)
    log.info("drain_finished", handed_back=handed_back)
    if worker.main_task is not None:
        worker.main_task.cancel()
