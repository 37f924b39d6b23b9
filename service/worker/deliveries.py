"""The webhook delivery loop each worker runs beside its jobs (a background task, started and
stopped with the worker).

At once when a job's webhook becomes due (its end announces it on ``rs:webhooks:wake``), when a
retry is due, and at least every ``WEBHOOK_POLL_SECONDS``, it claims the deliveries that are due, up
to ``MAX_IN_FLIGHT`` attempts at a time, each attempt a task of its own.
An attempt leases its delivery for ``WEBHOOK_TIMEOUT_SECONDS`` + ``LEASE_MARGIN_SECONDS``: if this
worker dies, another one makes the next attempt (same ``webhook-id``) once the lease runs out. A
Redis outage pauses the loop with backoff; it never ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import structlog

from service.core.errors import Unavailable
from service.core.retry import backoff_seconds
from service.inputs.webhooks import Attempt
from service.store.webhooks import Claim
from service.worker.webhooks import Webhooks

log = structlog.get_logger("service.worker.deliveries")

MAX_IN_FLIGHT = 20
LEASE_MARGIN_SECONDS = 5.0
# A stopping worker lets an attempt under way finish for this long; past it the attempt is cut and
# its lease given back (the next attempt, elsewhere, may then be a duplicate: at least once).
ATTEMPT_GRACE_SECONDS = 5.0
STOP_WAIT_SECONDS = 5.0  # for the loop's round under way to end (its Redis calls are bounded)


class DeliveryLoop:
    def __init__(self, webhooks: Webhooks) -> None:
        self._hooks = webhooks
        self._settings = webhooks.settings
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def _give_up_ms(self) -> int:
        return int(self._settings.webhook_give_up_seconds * 1000)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self, grace: float = 0.0) -> None:
        """Stops claiming, lets the attempts under way finish for ``grace`` seconds (a deploy should
        not cost a receiver a duplicate), then cuts the rest: they give their leases back."""
        if self._task is not None:
            # Asked to end, not cancelled: a cancel that lands as the poll's own timeout fires can be
            # lost (the task then waits for ever); the loop ends at its next check instead.
            self._stopping = True
            self._hooks.wake.set()
            done, _ = await asyncio.wait({self._task}, timeout=STOP_WAIT_SECONDS)
            if not done:  # a Redis call hanging: cut it
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._in_flight and grace > 0:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        leftover = list(self._in_flight)
        for task in leftover:
            task.cancel()
        for task in leftover:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settled(self) -> None:
        """Waits for the attempts under way (tests, and a drain that wants them finished)."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._hooks.wake.clear()  # a wake-up during this round starts the next one at once
            wait = self._settings.webhook_poll_seconds
            try:
                _, next_in = await self.start_due()
                if next_in is not None:
                    wait = min(wait, next_in + random.uniform(0, 0.05))
                failures = 0
            except Unavailable as exc:
                failures += 1
                pause = min(5.0, 0.2 * 2 ** min(failures, 5))
                log.warning(
                    "webhook_loop_redis_unreachable", error=str(exc), failures=failures, pause_s=pause
                )
                await asyncio.sleep(pause)
                continue
            except Exception as exc:  # a bug: logged, and the loop goes on (deliveries must not stop)
                log.error("webhook_loop_failed", error_type=type(exc).__name__, exc_info=exc)
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._hooks.wake.wait()

    async def start_due(self) -> tuple[int, float | None]:
        """Claims what is due (as far as there is room) and starts an attempt for each; how many,
        and the seconds until the next delivery is due (None: none is known)."""
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return 0, None
        deliveries = self._hooks.deliveries
        lease_ms = int((self._settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS) * 1000)
        due, next_in = await deliveries.due(room)
        claims = await deliveries.claim(due, lease_ms=lease_ms, give_up_ms=self._give_up_ms)
        for claim in claims:
            task = asyncio.create_task(self._attempt(claim), name=f"webhook-{claim.job_id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            # Its attempt ends by settling (due again later) or delivering: look again then.
            task.add_done_callback(lambda _: self._hooks.wake.set())
        return len(claims), next_in

    async def _attempt(self, claim: Claim) -> None:
        bound = log.bind(job_id=claim.job_id, attempts=claim.attempts)
        if claim.gave_up:
            bound.warning("webhook_failed", problem="given up after WEBHOOK_GIVE_UP_SECONDS")
            return
        try:
            await self._deliver(claim, bound)
        except asyncio.CancelledError:
            with contextlib.suppress(Unavailable):
                await asyncio.shield(self._hooks.deliveries.release(claim))
            raise
        except Unavailable as exc:
            # Its lease runs out and the next attempt goes out then, from whichever worker.
            bound.warning("webhook_outcome_unrecorded", error=str(exc))
        except Exception as exc:  # a bug: logged; the lease runs out and the delivery is tried again
            bound.error("webhook_attempt_crashed", error_type=type(exc).__name__, exc_info=exc)

    async def _deliver(self, claim: Claim, bound: structlog.typing.FilteringBoundLogger) -> None:
        hooks = self._hooks
        full = await hooks.deliveries.with_message(claim)
        if full is None:
            await hooks.deliveries.settle(claim, "failed", give_up_ms=self._give_up_ms)
            bound.warning("webhook_failed", problem="the job is no longer retained")
            return
        secret = await hooks.secrets.secret_for(full.user_id)
        attempt = await hooks.sender.send(full.url, secret, full.message_id, full.body)
        outcome, delay = self._outcome(attempt, claim.attempts)
        recorded = await hooks.deliveries.settle(
            full, outcome, retry_in_ms=int(delay * 1000), give_up_ms=self._give_up_ms
        )
        _log_attempt(bound, recorded, attempt, delay)

    def _outcome(self, attempt: Attempt, attempts: int) -> tuple[str, float]:
        if attempt.delivered:
            return "delivered", 0.0
        if attempt.gone:
            return "failed", 0.0
        settings = self._settings
        delay = backoff_seconds(
            attempts,
            base=settings.webhook_retry_base_seconds,
            cap=settings.webhook_retry_max_seconds,
            retry_after=attempt.retry_after,
        )
        return "retry", delay


def _log_attempt(
    bound: structlog.typing.FilteringBoundLogger, recorded: str, attempt: Attempt, delay: float
) -> None:
    if recorded == "delivered":
        bound.info("webhook_delivered", status=attempt.status)
    elif recorded == "retry":
        bound.info("webhook_retry", problem=attempt.problem, defer_s=round(delay, 2))
    elif recorded == "failed":
        bound.warning("webhook_failed", problem=attempt.problem)
    else:  # another worker took the delivery over meanwhile (this one's lease had run out)
        bound.info("webhook_attempt_stale", problem=attempt.problem or "delivered")
