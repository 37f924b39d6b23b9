"""The fleet's batch driver: one worker at a time (a lease in Redis, taken over when it lapses) sends
the jobs waiting in the batch lane as provider batches and follows them until they end.

Exactly once: a job is in at most one provider batch. The jobs of the next batch are named in an
intent, written (with the time) in the same step that takes them from the pending set, *before*
the create call; the batch id is recorded on them after it. A driver that finds an intent left open
(its writer died or timed out between the two) asks the provider which batch holds it
(``BatchApi.find``) and records that one, or, once the provider says none can exist, puts the jobs
back to wait; it never creates a batch for an open intent. Only one intent exists at a time.

Batches are looked at with backoff (``BATCH_POLL_MIN_SECONDS`` doubling up to ``..._MAX_SECONDS``);
one whose every job was cancelled is cancelled at the provider (nothing more is billed for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from service.core.errors import JobError, ProviderRejected, Unavailable
from service.providers.batch import BatchApi, BatchIntent, BatchStatus, Failed, Found, NotCreated
from service.store import names
from service.store.batches import BatchStore, Intent
from service.worker.batch_lane import decode
from service.worker.batch_results import close_unsent, settle_one, settle_results
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker.batch_driver")

TICK_SECONDS = 1.0  # how often a worker not driving checks (in memory) whether it holds the lease now
BATCHES_PER_LOOK = 20
RESOLVE_SECONDS = 5.0  # how often an undecided intent is looked up again (each look lists batches)


class BatchDriver:
    def __init__(
        self,
        deps: WorkerDeps,
        *,
        lease_seconds: float | None = None,  # None: BATCH_DRIVER_LEASE_SECONDS
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),  # the intents' clock (a seam for tests)
    ) -> None:
        assert deps.batches is not None and deps.batch_store is not None
        self.deps = deps
        self.api: BatchApi = deps.batches
        self.store: BatchStore = deps.batch_store
        self.settings = deps.settings
        self.token = secrets.token_hex(8)
        lease = deps.settings.batch_driver_lease_seconds if lease_seconds is None else lease_seconds
        # The holder renews three times a lease; the others ask twice, so one takes over within
        # about 1.5 leases of a holder's death, at a few commands a minute per worker.
        self.lease_ms, self.renew_seconds, self.ask_seconds = int(lease * 1000), lease / 3, lease / 2
        # An idle lane (nothing waiting, no batch open) is looked at this often, not every tick: a job
        # handed to it is then sent at most half a window late.
        self.idle_look = min(deps.settings.worker_idle_poll_seconds, deps.settings.batch_window_seconds / 2)
        self.holding = False
        self.clock = clock
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="batch-lease"),
            asyncio.create_task(self._drive(), name="batch-driver"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Unavailable):
            await self.store.release(self.token)  # another worker takes over at once

    async def _keep_lease(self) -> None:
        while not self._stopping.is_set():
            try:
                self.holding = await self.store.lease(self.token, self.lease_ms)
            except Unavailable as exc:
                self.holding = False
                log.warning("batch_lease_failed", error=str(exc))
            await self._pause(self.renew_seconds if self.holding else self.ask_seconds)

    async def _drive(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            wait = TICK_SECONDS
            try:
                if self.holding:
                    wait = await self.step()
                failures = 0
            except (Unavailable, JobError) as exc:  # Redis or the provider: look again later
                failures += 1
                wait = min(60.0, 0.5 * 2 ** min(failures, 7))
                log.warning("batch_driver_step_failed", error=str(exc)[:200], pause_s=wait)
            except Exception as exc:  # a bug: logged, and the lane keeps going (every step is safe to redo)
                failures += 1
                wait = min(60.0, 0.5 * 2 ** min(failures, 7))
                log.error("batch_driver_crashed", error_type=type(exc).__name__, exc_info=exc, pause_s=wait)
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))

    async def step(self) -> float:
        """One look at the lane: an open intent resolved, due jobs sent, due batches followed.
        Returns how long until the next look is needed."""
        if await self.store.intent() is not None and not await self.resolve_intent():
            # Undecided: no new batch until it is (one intent at a time); ask the provider again later.
            return min(RESOLVE_SECONDS, await self.follow_due())
        waits = [await self.send_due(), await self.follow_due()]
        return min(waits)

    # --- sending ------------------------------------------------------------------------------------

    async def send_due(self) -> float:
        due = await self.store.pending_due(int(self.settings.batch_window_seconds * 1000), self.most)
        if not due.members:
            return self.idle_look if due.wait_ms is None else min(due.wait_ms / 1000, self.idle_look)
        prepared = await self.store.requests(due.members)
        for member in due.members:
            if member not in prepared:
                await self.store.drop(member)
        written_at = self.clock()  # before the create call: the provider's creation time follows
        taken = await self.store.take(list(prepared), secrets.token_hex(8), written_at.isoformat())
        for member in taken.gone:
            await close_unsent(self.deps, member)
        if taken.intent is None:
            return 0.0
        requests = [(names.split_member(m)[0], decode(prepared[m]).request) for m in taken.intent.members]
        status = await self.api.create(requests)  # raising leaves the intent open: resolved by find
        await self._record(taken.intent, status)
        return 0.0

    @property
    def most(self) -> int:
        return self.settings.batch_max_requests

    async def resolve_intent(self) -> bool:
        """An intent left open: the batch that holds it recorded, or its jobs back to waiting. False
        while the provider cannot yet say (the intent stays open)."""
        intent = await self.store.intent()
        if intent is None:
            return True
        custom_ids = tuple(names.split_member(member)[0] for member in intent.members)
        wanted = BatchIntent(custom_ids, datetime.fromisoformat(intent.written_at))
        lookup = await self.api.find(wanted, claimed=await self.store.known(), now=self.clock())
        if isinstance(lookup, Found):
            log.info("batch_intent_found", batch_id=lookup.batch_id, verified=lookup.verified)
            await self._record(intent, await self.api.status(lookup.batch_id))
        elif isinstance(lookup, NotCreated):
            log.info("batch_intent_not_created", jobs=len(intent.members))
            await self.store.reset_intent(intent)
        else:
            log.info("batch_intent_undecided", candidates=len(lookup.candidates))
            return False
        return True

    async def _record(self, intent: Intent, status: BatchStatus) -> None:
        created_ms = int(status.created_at.timestamp() * 1000)
        first_poll = int(self.settings.batch_poll_min_seconds * 1000)
        if await self.store.record_batch(
            intent, status.batch_id, created_ms=created_ms, first_poll_ms=first_poll
        ):
            log.info("batch_created", batch_id=status.batch_id, jobs=len(intent.members))

    # --- following ----------------------------------------------------------------------------------

    async def follow_due(self) -> float:
        batch_ids, next_in = await self.store.due_batches(BATCHES_PER_LOOK)
        for batch_id in batch_ids:
            await self.follow(batch_id)
        if batch_ids:
            return 0.0
        return self.idle_look if next_in is None else min(next_in / 1000, self.idle_look)

    async def follow(self, batch_id: str) -> None:
        members = await self.store.members(batch_id)
        try:
            status = await self.api.status(batch_id)
        except ProviderRejected as exc:  # the provider does not know it: its jobs cannot be answered
            await self._unknown(batch_id, members, exc)
            return
        if not status.ended:
            await self._cancel_if_abandoned(status, members)
            polls = await self.store.polls(batch_id)
            low, high = self.settings.batch_poll_min_seconds, self.settings.batch_poll_max_seconds
            await self.store.reschedule(batch_id, int(min(high, low * 2**polls) * 1000))
            return
        await settle_results(self.deps, batch_id, members)
        await self.store.finished(batch_id)
        log.info("batch_settled", batch_id=batch_id, counts=dict(status.counts))

    async def _cancel_if_abandoned(self, status: BatchStatus, members: list[str]) -> None:
        """Every job of the batch was cancelled: the provider stops processing it (what it already
        answered is still billed, and counted when the results come)."""
        if status.cancel_requested or status.state != "in_progress":
            return
        if any(state in ("active", "queued") for state in await self.store.states(members)):
            return
        result = await self.api.cancel(status.batch_id)
        log.info("batch_cancelled", batch_id=status.batch_id, in_time=result.in_time)

    async def _unknown(self, batch_id: str, members: list[str], exc: ProviderRejected) -> None:
        for member in members:
            await settle_one(self.deps, batch_id, member, Failed(exc))
        await self.store.finished(batch_id)
        log.warning("batch_unknown", batch_id=batch_id, error=str(exc)[:200])
