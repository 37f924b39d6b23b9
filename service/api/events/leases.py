"""How many event streams each user holds open across the fleet (``EVENTS_MAX_STREAMS_PER_USER``).

Every stream holds a lease in Redis (``service.store.stream_leases``) from before it starts until it
ends. One task per process does all the Redis work: it grants the acquisitions that arrived since
its last round, removes released leases, and refreshes the leases of streams still open every third
of ``EVENTS_STREAM_LEASE_SECONDS``; each round is one round trip whatever the number of streams, so
thousands of clients cost one pooled connection, not one each. A process that dies stops refreshing,
and its leases run out by themselves within a lease period.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from service.core.errors import RateLimited, Unavailable
from service.core.settings import Settings
from service.store.connection import API_OPERATION_DEADLINE, RedisClient
from service.store.stream_leases import StreamLeaseStore

log = structlog.get_logger(__name__)

BATCH = 500  # acquisitions or releases per round trip
RETRY_AFTER_SECONDS = 5  # when a user at the cap may try again: streams end when their clients say


@dataclass(eq=False)
class Lease:
    """One open stream's claim; ``release`` is idempotent and never waits for Redis."""

    user_id: str
    lease_id: str
    _keeper: StreamLeases | None = field(default=None, repr=False)

    def release(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.forget(self)


@dataclass(eq=False)
class _Wanted:
    lease: Lease
    granted: asyncio.Future[bool]


class StreamLeases:
    def __init__(self, store: StreamLeaseStore, *, cap: int, lease_seconds: float) -> None:
        self._store = store
        self.cap = cap
        self._lease_ms = int(lease_seconds * 1000)
        self._refresh_every = lease_seconds / 3
        self._ids = (f"{secrets.token_hex(6)}:{n}" for n in itertools.count())
        self._held: dict[str, set[str]] = {}  # user -> lease ids of this process's open streams
        self._wanted: list[_Wanted] = []
        self._released: list[tuple[str, str]] = []
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """The process is going away, and its streams with it: every lease it holds is given back
        now, so clients reconnecting elsewhere are not refused for a lease period after a deploy."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        for wanted in self._wanted:
            if not wanted.granted.done():
                wanted.granted.set_exception(_shutting_down())
        self._released += [(user_id, lease_id) for user_id, ids in self._held.items() for lease_id in ids]
        self._held.clear()
        with contextlib.suppress(Unavailable):  # they run out by themselves
            await self._flush_releases()

    async def acquire(self, user_id: str) -> Lease:
        """A lease on one more open stream for ``user_id``; ``RateLimited`` at the cap (0: no cap,
        nothing counted), ``Unavailable`` when Redis cannot be asked."""
        if self.cap <= 0:
            return Lease(user_id, "")
        if self._task is None or self._task.done():
            raise _shutting_down()  # nobody would ever answer
        lease = Lease(user_id, next(self._ids), self)
        wanted = _Wanted(lease, asyncio.get_running_loop().create_future())
        self._wanted.append(wanted)
        self._work.set()
        try:
            granted = await wanted.granted
        except asyncio.CancelledError:
            lease.release()  # granted or not: it must not stay counted
            raise
        if not granted:
            lease._keeper = None  # nothing to release
            raise RateLimited(
                f"at most {self.cap} event streams may be open at once per user; close one first",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self._held.setdefault(user_id, set()).add(lease.lease_id)
        return lease

    def forget(self, lease: Lease) -> None:
        held = self._held.get(lease.user_id)
        if held is not None:
            held.discard(lease.lease_id)
            if not held:
                del self._held[lease.user_id]
        self._released.append((lease.user_id, lease.lease_id))
        self._work.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self._refresh_every
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_refresh):
                    await self._work.wait()
            self._work.clear()
            try:
                await self._flush_releases()  # first: a slot freed and taken again in one round is free
                while self._wanted:
                    await self._grant()
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + self._refresh_every
                    held = {user_id: sorted(ids) for user_id, ids in self._held.items()}
                    await self._store.refresh(held, lease_ms=self._lease_ms)
            except Unavailable as exc:
                log.warning("stream_leases_redis_error", error=type(exc.__cause__ or exc).__name__)
            except Exception as exc:  # a bug must not stop every stream's accounting
                log.error("stream_leases_failed", error_type=type(exc).__name__, exc_info=exc)
            if self._wanted or self._released:  # what arrived during the round, or was left after an error
                self._work.set()

    async def _flush_releases(self) -> None:
        # Taken before the round trip, and not put back if it fails: those leases run out anyway.
        released, self._released = self._released, []
        for start in range(0, len(released), BATCH):
            await self._store.release(released[start : start + BATCH])

    async def _grant(self) -> None:
        batch = [wanted for wanted in self._wanted[:BATCH] if not wanted.granted.done()]
        del self._wanted[:BATCH]
        if not batch:
            return
        try:
            granted = await self._store.acquire(
                [(w.lease.user_id, w.lease.lease_id) for w in batch], cap=self.cap, lease_ms=self._lease_ms
            )
        except BaseException as exc:
            for wanted in batch:  # no handler may wait for ever
                if not wanted.granted.done():
                    # Cancelled (the server stopping): a 503 that says when to come back.
                    wanted.granted.set_exception(exc if isinstance(exc, Exception) else _shutting_down())
            raise
        for wanted, answer in zip(batch, granted, strict=True):
            if not wanted.granted.done():
                wanted.granted.set_result(answer)


def _shutting_down() -> Unavailable:
    return Unavailable("this server is shutting down; reconnect", retry_after=1)


@asynccontextmanager
async def open_stream_leases(redis: RedisClient, settings: Settings) -> AsyncIterator[StreamLeases]:
    store = StreamLeaseStore(redis, deadline=API_OPERATION_DEADLINE)
    leases = StreamLeases(
        store, cap=settings.events_max_streams_per_user, lease_seconds=settings.events_stream_lease_seconds
    )
    leases.start()
    try:
        yield leases
    finally:
        await leases.stop()
