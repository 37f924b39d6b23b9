"""The worker's loop over the report queue: claim due jobs up to the worker's concurrency, run each
as a task, and wait for more without polling.

An idle worker blocks on the marker (``service.store.wake.WorkMarker``): a submission, an unparked
job or a handed-back one sets it, and exactly one idle worker wakes; a worker that finds more due
jobs than it can take passes the marker on. Retries name the time they are due, and a worker that
knows of one waits until then; past that, an idle worker looks at the queue at least every
``WORKER_IDLE_POLL_SECONDS`` (a dead worker's job comes due when its lease ends, announced by no one).
A user's cancel reaches the worker running the job over pub/sub (``ChannelListener``), and the job's
next store step would tell it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

from service.core.errors import Unavailable
from service.store import names
from service.store.job_types import StartOutcome
from service.store.policies import start_policy
from service.store.wake import ChannelListener, WorkMarker
from service.worker.job_metrics import job_retried
from service.worker.pipeline import run_claimed
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker.runtime")

# Members looked at beyond the free slots: some may be parked, deferred or taken by another worker.
SPARE_MEMBERS = 4
# Pages of the queue one look goes through while it finds due jobs that cannot run (a user at their
# cap parks a burst of theirs): the jobs behind them still start at once.
MAX_PAGES = 8
# A job not taken here (a suspect waiting for a worker of its own) waits this long, at random.
DEFER_SECONDS = (1.0, 3.0)
# How long the jobs still running when a drain's grace ends get to hand themselves back.
HAND_BACK_SECONDS = 10.0


JobRunner = Callable[[WorkerDeps, StartOutcome], Awaitable[None]]


class WorkerRuntime:
    def __init__(
        self,
        deps: WorkerDeps,
        marker: WorkMarker | None = None,
        *,
        run_job: JobRunner = run_claimed,
        listeners: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        self.deps = deps
        self.marker = marker  # None: poll (a burst worker in tests)
        self.run_job = run_job  # the report pipeline; benchmarks of the machinery put a stand-in
        # What the fleet announces over pub/sub, besides cancels (webhooks due, for the delivery loop).
        self.listeners = {names.CANCEL_CHANNEL: self.cancel, **(listeners or {})}
        self.concurrency = deps.settings.worker_concurrency
        self.idle_poll = deps.settings.worker_idle_poll_seconds  # the longest an idle look waits
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._marker_wait: asyncio.Task[bool] | None = None

    @property
    def in_flight(self) -> int:
        return len(self.deps.running)

    def cancel(self, job_id: str) -> None:
        """A user cancelled a running job (announced fleet-wide): stop it if it runs here."""
        if self.deps.running.stop(job_id):
            log.info("job_cancel_received", job_id=job_id)

    async def run(self, *, burst: bool = False) -> None:
        """Runs until ``drain`` (or, with ``burst``, until the queue is empty and nothing runs here)."""
        failures = 0
        woken = False
        cancels = ChannelListener(self.deps.settings.redis_url, self.listeners)
        cancels.start()
        try:
            while not self._stopping.is_set():
                try:
                    next_in = await self._claim_due(woken)
                    if burst and not self.in_flight and await self.deps.jobs.queue_size() == 0:
                        return
                    failures = 0
                except Unavailable as exc:
                    failures += 1
                    pause = min(5.0, 0.2 * 2 ** min(failures, 5))
                    log.warning("redis_unreachable", error=str(exc), failures=failures, pause_s=pause)
                    await self._idle(pause, use_marker=False)
                    continue
                woken = await self._idle(next_in, use_marker=self.marker is not None)
        finally:
            if self._marker_wait is not None:
                self._marker_wait.cancel()
            if burst:
                await self._finish_tasks(None)
            await cancels.stop()

    async def _claim_due(self, woken: bool) -> float:
        """Claims due jobs while this worker has free slots; returns how long to wait (seconds).
        ``woken``: the marker woke this worker (it passes it on if it has no room after all)."""
        self._slot_freed.clear()
        free = self.concurrency - self.in_flight
        if free <= 0:
            if woken:
                await self.deps.jobs.wake_one()
            return self.idle_poll
        wait = self.idle_poll
        for _ in range(MAX_PAGES):
            limit = free + SPARE_MEMBERS
            due = await self.deps.jobs.due(limit)
            if due.next_in_ms is not None:
                wait = min(wait, due.next_in_ms / 1000)
            looked = 0
            for member in due.members:
                if free <= 0 or self._stopping.is_set():
                    break
                looked += 1
                outcome = await self.claim(member)
                if outcome == "claimed":
                    free -= 1
                elif outcome == "deferred":
                    wait = min(wait, DEFER_SECONDS[0])
            if looked < len(due.members):
                if self.marker is not None:
                    await self.deps.jobs.wake_one()  # more due than this worker takes: wake another
                break
            if len(due.members) < limit or free <= 0:
                break  # the queue had no more due; else those looked at moved (parked, deferred): look on
        return wait

    async def claim(self, member: str) -> str:
        """START for one member; a claimed job starts running here. Returns "claimed" or START's state."""
        deps = self.deps
        async with deps.running.starting() as (others, suspect_here):
            started = await deps.jobs.start(
                member,
                start_policy(deps.settings),
                others_here=others,
                suspect_here=suspect_here,
                defer_ms=int(random.uniform(*DEFER_SECONDS) * 1000),
            )
            if started.lost_calls:
                # Calls a dead worker left open: counted as far as it recorded them, before anything runs.
                job_id = names.split_member(member)[0]
                await deps.calls.close_lost(job_id, started.record, started.lost_calls)
            if started.state in ("active", "crashed"):
                task = asyncio.create_task(self._run(started), name=f"job-{member[:12]}")
                deps.running.began(names.split_member(member)[0], task, alone=started.alone)
                task.add_done_callback(lambda _: self._slot_freed.set())
                return "claimed"
        if started.state == "parked":
            job_retried(deps.metrics, started.record, "parked")
            log.info("job_parked", job_id=started.record.get("job_id"))
        elif started.state == "deferred":  # a suspect waits for a worker of its own, or others for it
            log.info("job_deferred", job_id=names.split_member(member)[0])
        return started.state

    async def _run(self, started: StartOutcome) -> None:
        try:
            await self.run_job(self.deps, started)
        except asyncio.CancelledError:
            pass  # stopped (a cancel or a drain): the pipeline handed the job back already
        except Exception as exc:  # the outcome could not be recorded: its lease brings it back
            log.warning("job_outcome_unrecorded", error_type=type(exc).__name__, error=str(exc)[:200])
        finally:
            structlog.contextvars.clear_contextvars()

    async def _idle(self, seconds: float, *, use_marker: bool) -> bool:
        """Waits until a job here ends, the marker comes (with free slots), a drain starts, or
        ``seconds`` pass; True when the marker came."""
        waiters: set[asyncio.Future[object]] = {
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._slot_freed.wait()),
        }
        marker = None
        if use_marker and self.marker is not None and self.in_flight < self.concurrency:
            if self._marker_wait is None or self._marker_wait.done():
                self._marker_wait = asyncio.create_task(self.marker.wait(self.idle_poll))
            marker = self._marker_wait
        elif self.marker is None:
            seconds = min(seconds, 0.5)  # no marker to wake us: look again soon
        try:
            await asyncio.wait(
                waiters | ({marker} if marker is not None else set()),
                timeout=max(0.0, seconds),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if marker is None or not marker.done():
            return False
        self._marker_wait = None
        if marker.cancelled():
            return False
        if marker.exception() is not None:
            log.warning("marker_wait_failed", error=str(marker.exception()))
            await asyncio.sleep(1.0)
            return False
        return bool(marker.result())

    async def drain(self, grace_seconds: float) -> int:
        """Stops taking jobs, gives running ones ``grace_seconds`` to finish, then stops the rest
        (each hands its job back to the queue without spending an attempt); returns how many."""
        self._stopping.set()
        return await self._finish_tasks(grace_seconds)

    async def _finish_tasks(self, grace_seconds: float | None) -> int:
        deadline = None if grace_seconds is None else time.monotonic() + grace_seconds
        while self.deps.running.tasks:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            await asyncio.wait(set(self.deps.running.tasks.values()), timeout=remaining)
        leftover = list(self.deps.running.tasks.values())
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover, timeout=HAND_BACK_SECONDS)
        return len(leftover)

    async def close(self) -> None:
        if self._marker_wait is not None:
            self._marker_wait.cancel()
            with contextlib.suppress(BaseException):
                await self._marker_wait
