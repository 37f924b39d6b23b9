"""Live job events for one API process: one Redis reader fanning stream entries out to subscribers.

One task per process reads every watched job stream with a single ``XREAD BLOCK`` on a dedicated
connection and hands each entry, encoded once, to the subscribers of that job. Thousands of SSE
clients therefore cost two Redis connections in all (this reader, plus the API's pool, which this
module only uses from the reader task and for one coalesced wake-up at a time), not one each.

Nothing is lost between "snapshot" and "live": a new subscriber is admitted by the reader task
itself, between two reads, with one MULTI/EXEC that reads the job record and its stream's last
entries together. Every entry after that point comes from the next reads; each subscriber skips
entries up to the id it already has, so a job watched before it joined cannot deliver twice.

A read blocked on Redis is woken for a new subscriber by an entry in this process's own wake
stream, which is one of the streams it reads: unlike cancelling the read (which drops the
connection in redis-py) or short timeouts (which cost latency or round trips), that costs one
small write and cannot be lost, since the reader keeps its position in the wake stream too.
The Redis commands themselves live in ``service.store.event_streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from service.api.events.admissions import Admission, abandon, fail_all, open_batch
from service.api.events.subscriber import Subscriber
from service.api.events.wire import NO_ID, Opening, encode_entry, plan_start, stream_id
from service.core.errors import Unavailable
from service.core.settings import Settings
from service.store import names
from service.store.connection import API_OPERATION_DEADLINE, RedisClient
from service.store.event_streams import EventStreams

log = structlog.get_logger(__name__)

BLOCK_MS = 5_000  # bounds nothing that matters (wake-ups are explicit): just a liveness tick
READ_COUNT = 200  # entries per stream per read: a burst is taken in a few reads, not one huge reply
ADMIT_BATCH = 500  # subscribers admitted per MULTI/EXEC
BACKOFF_FIRST, BACKOFF_CAP = 0.05, 2.0


@dataclass(eq=False)
class _Watch:
    """One job stream being read: the last entry id read from it, and who wants its entries."""

    job_id: str
    cursor: str
    subscribers: set[Subscriber] = field(default_factory=set)


class EventFanout:
    def __init__(self, streams: EventStreams, *, block_ms: int = BLOCK_MS) -> None:
        self._streams = streams
        self._block_ms = block_ms
        self._wake_key = names.fanout_wake(secrets.token_hex(8))
        self._wake_cursor = NO_ID
        self._wake_used = False
        self._watches: dict[str, _Watch] = {}  # by stream key
        self._pending: list[Admission] = []
        self._work = asyncio.Event()
        self._reading = self._wake_sent = self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        # Handed to every EventSourceResponse: sse-starlette sets it when the server shuts down.
        self.shutdown_event = anyio.Event()

    @property
    def subscriber_count(self) -> int:
        return sum(len(watch.subscribers) for watch in self._watches.values())

    @property
    def watched_jobs(self) -> int:
        return len(self._watches)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._end_on_shutdown())]

    async def stop(self) -> None:
        self.end_all()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._wake_used:
            with contextlib.suppress(Unavailable):  # it expires by itself
                await self._streams.forget(self._wake_key)

    def end_all(self) -> None:
        """The server is going away: every stream ends cleanly, so clients reconnect elsewhere."""
        self._closing = True
        for watch in self._watches.values():
            for subscriber in watch.subscribers:
                subscriber.finish()
        self._watches.clear()
        for admission in self._pending:
            if not admission.future.done():
                admission.future.set_exception(_shutting_down())
        self._pending.clear()

    async def subscribe(self, job_id: str, after: str | None) -> Subscriber | None:
        """A subscriber whose first events are the snapshot (or the replay after ``after``); None for
        a job that does not exist. Raises ``Unavailable`` when Redis cannot be read."""
        if self._closing:
            raise _shutting_down()
        future: asyncio.Future[Subscriber | None] = asyncio.get_running_loop().create_future()
        self._pending.append(Admission(job_id, after, future))
        self._work.set()
        try:
            await self._wake()
            return await future
        except asyncio.CancelledError:
            abandon(future)
            raise

    def release(self, subscriber: Subscriber) -> None:
        key = names.job_events(subscriber.job_id)
        watch = self._watches.get(key)
        if watch is not None:
            watch.subscribers.discard(subscriber)
            if not watch.subscribers:
                del self._watches[key]

    async def _wake(self) -> None:
        """Makes a blocked read return now; at most one wake-up is in flight."""
        if not self._reading or self._wake_sent:
            return  # the reader looks at new subscribers before its next read anyway
        self._wake_sent = self._wake_used = True
        try:
            await self._streams.wake(self._wake_key)
        except Unavailable:
            self._wake_sent = False  # the admission reports Redis down to the caller

    async def _end_on_shutdown(self) -> None:
        await self.shutdown_event.wait()
        self.end_all()

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._step()
                backoff = BACKOFF_FIRST
            except Unavailable as exc:
                # Positions are kept: once Redis answers again, reading resumes where it stopped.
                cause = type(exc.__cause__ or exc).__name__
                log.warning("events_reader_redis_error", error=cause, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
            except Exception as exc:  # a bug must not stop every stream of the process
                log.error("events_reader_failed", error_type=type(exc).__name__, exc_info=exc)
                await asyncio.sleep(BACKOFF_CAP)

    async def _step(self) -> None:
        while self._pending:
            await self._admit()
        if not self._watches:
            # Idle: hold no Redis connection, just wait for the first subscriber.
            self._work.clear()
            await self._work.wait()
            return
        self._dispatch(await self._read())

    async def _read(self) -> list[Any]:
        cursors = {self._wake_key: self._wake_cursor}
        cursors.update((key, watch.cursor) for key, watch in self._watches.items())
        self._reading = True
        try:
            return await self._streams.read(cursors, count=READ_COUNT, block_ms=self._block_ms)
        finally:
            self._reading = self._wake_sent = False

    def _dispatch(self, replies: list[Any]) -> None:
        for key, entries in replies:
            if key == self._wake_key:
                self._wake_cursor = entries[-1][0]
                continue
            watch = self._watches.get(key)
            if watch is None:
                continue  # its last subscriber left while the read was in flight
            for entry in entries:
                watch.cursor = entry[0]
                try:
                    chunk, terminal = encode_entry(watch.job_id, entry)
                except ValueError as exc:  # one unreadable entry must not stall every stream
                    log.error("events_entry_unreadable", job_id=watch.job_id, error_type=type(exc).__name__)
                    continue
                position = stream_id(entry[0])
                for subscriber in list(watch.subscribers):
                    if not subscriber.deliver(chunk, position, terminal):
                        self.release(subscriber)

    async def _admit(self) -> None:
        batch = [a for a in self._pending[:ADMIT_BATCH] if not a.future.done()]
        del self._pending[:ADMIT_BATCH]
        if not batch:
            return
        try:
            openings = await open_batch(self._streams, batch)
        except BaseException as exc:  # Redis down, or the server stopping: every admission alike
            fail_all(batch, exc)
            raise
        for admission, opening in zip(batch, openings, strict=True):
            self._settle(admission, opening)

    def _settle(self, admission: Admission, opening: Opening | Exception) -> None:
        """Answers one waiting handler; what fails here fails that handler alone."""
        if admission.future.done():  # the client left while Redis answered
            return
        if isinstance(opening, Exception):
            log.error("events_admission_failed", job_id=admission.job_id, error=str(opening))
            admission.future.set_exception(opening)
            return
        try:
            admission.future.set_result(self._admitted(opening))
        except Exception as exc:  # an unreadable record or entry: this subscriber's problem only
            log.error("events_admission_failed", job_id=admission.job_id, error_type=type(exc).__name__)
            admission.future.set_exception(exc)

    def _admitted(self, opening: Opening) -> Subscriber | None:
        start = plan_start(opening)
        if start is None or opening.record is None:
            return None
        owner = opening.record.get("user_id")
        subscriber = Subscriber(opening.job_id, owner, start.chunks, start.last_id, self.release)
        if not start.live:
            subscriber.finish()
            return subscriber
        key = names.job_events(opening.job_id)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(opening.job_id, start.last_id)
        watch.subscribers.add(subscriber)
        return subscriber


def _shutting_down() -> Unavailable:
    return Unavailable("this server is shutting down; reconnect", retry_after=1)


@asynccontextmanager
async def open_fanout(redis: RedisClient, settings: Settings) -> AsyncIterator[EventFanout]:
    """The API lifespan's fan-out; its reader connects on the first subscriber, not at startup."""
    # The API's bound on a store operation: a hung Redis answers 503, not a stuck request.
    streams = EventStreams.open(redis, settings.redis_url, block_ms=BLOCK_MS, deadline=API_OPERATION_DEADLINE)
    fanout = EventFanout(streams)
    fanout.start()
    try:
        yield fanout
    finally:
        await fanout.stop()
        await streams.aclose()
