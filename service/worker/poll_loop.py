"""arq's poll loop, made event-driven and outage-proof, without forking arq.

arq polls Redis every ``poll_delay`` (0.5 s by default): a job waits up to that long to be picked,
and a finished job's slot waits as long to be refilled. Here arq runs with ``poll_delay=0`` and each
poll iteration is followed by a wait for a wake-up: a job submitted, unparked or cancelled
(published on ``rs:wake`` by the store's scripts), or one of this worker's own jobs ending. The wait
is bounded by ``WORKER_IDLE_POLL_SECONDS`` for what no one announces (a retry whose backoff ended).
A Redis outage pauses the loop with backoff instead of ending the worker.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from arq.worker import Worker

from service.store.connection import REDIS_DOWN
from service.store.wake import WakeSignal

log = structlog.get_logger("service.worker.poll_loop")


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


def drive_poll_loop(worker: Worker, wake: WakeSignal, idle_poll_seconds: float) -> None:
    """Replaces the worker's poll iteration with: poll, then sleep until woken (or idle timeout).

    A Redis outage inside the iteration (arq lets it end the worker, and redis-py's retries do not
    cover a pipeline that cannot get a connection) becomes a pause with backoff; jobs it interrupted
    are picked up again once their in-progress marks expire, and the job record's state machine
    sorts out what already happened.
    """
    iteration = worker._poll_iteration
    failures = 0

    async def iterate_then_wait() -> None:
        nonlocal failures
        wake.event.clear()  # a wake-up that arrives while we poll triggers the next poll at once
        try:
            await iteration()
            failures = 0
        except REDIS_DOWN as exc:
            failures += 1
            pause = min(5.0, 0.2 * 2 ** min(failures, 5))
            log.warning("redis_unreachable", error=type(exc).__name__, failures=failures, pause_s=pause)
            await asyncio.sleep(pause)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(idle_poll_seconds):
                await wake.event.wait()

    worker._poll_iteration = iterate_then_wait  # type: ignore[method-assign]  # arq offers no hook here
