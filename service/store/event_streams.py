"""Job event streams as an API process reads them: one blocking read for every watched stream, an
atomic opening read for new subscribers, and a wake-up stream that ends a blocked read at once.

The fan-out (``service.api.events.fanout``) decides what to read and who gets what; this module
only talks to Redis, and every failure comes out as ``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.typing import KeyT, StreamIdT

from service.store import names
from service.store.connection import (
    RedisStore,
    open_redis,
    translate_blocking_redis_errors,
    translate_redis_errors,
)

WAKE_TTL_SECONDS = 300  # a crashed process's wake stream goes away by itself

# One stream entry as redis-py returns it: (id, {"event": ..., "data": <JSON text>}).
Entry = tuple[str, dict[str, str]]
# What an opening read returns per job: its record (None: no such job), the stream's last two
# entries (newest first), and the entries from the client's Last-Event-ID on, when it sent one.
Opened = tuple[dict[str, str] | None, list[Entry], list[Entry] | None]


class OpeningRefused(Exception):
    """Redis refused a command of one job's opening read (not Redis being down: that is
    ``Unavailable``); carries Redis's message, never a redis-py exception."""


def _opened(job_id: str, replies: list[Any]) -> Opened | OpeningRefused:
    refused = [reply for reply in replies if isinstance(reply, Exception)]
    if refused:
        return OpeningRefused(f"opening job {job_id}: {refused[0]}")
    record, tail = replies[0] or None, replies[1]
    return record, tail, replies[2] if len(replies) > 2 else None


class EventStreams(RedisStore):
    """``redis`` is the API's pool (openings, wake-ups); ``reader`` a dedicated connection for the
    one blocking read, which must not hold a pooled connection for seconds at a time."""

    def __init__(self, redis: Redis, reader: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._reader = reader

    @classmethod
    def open(cls, redis: Redis, redis_url: str, *, block_ms: int, deadline: float | None) -> EventStreams:
        # The reader connects on its first read, not here: the API starts while Redis is down.
        reader = open_redis(redis_url, fail_fast=True, role="events-reader", blocking_ms=block_ms)
        return cls(redis, reader, deadline=deadline)

    async def aclose(self) -> None:
        await self._reader.aclose()

    @translate_blocking_redis_errors
    async def read(self, cursors: dict[str, str], *, count: int, block_ms: int) -> list[Any]:
        """New entries after each stream's cursor, waiting up to ``block_ms`` for the first one."""
        streams: dict[KeyT, StreamIdT] = dict(cursors.items())
        replies: list[Any] = await self._reader.xread(streams, count=count, block=block_ms)
        return replies

    @translate_redis_errors
    async def opening(self, jobs: Iterable[tuple[str, str | None]]) -> list[Opened | OpeningRefused]:
        """Each job's record and stream at the same instant (one MULTI/EXEC), for (job id, after).

        A command Redis refuses for one job (an id it cannot parse, a key of the wrong type) comes
        back as that job's ``OpeningRefused``: the other jobs of the transaction are still answered."""
        wanted = list(jobs)
        async with self._redis.pipeline(transaction=True) as pipe:
            for job_id, after in wanted:
                pipe.hgetall(names.job(job_id))
                pipe.xrevrange(names.job_events(job_id), count=2)
                if after is not None:
                    pipe.xrange(names.job_events(job_id), min=after)
            replies = iter(await pipe.execute(raise_on_error=False))
        return [
            _opened(job_id, [next(replies) for _ in range(2 if after is None else 3)])
            for job_id, after in wanted
        ]

    @translate_redis_errors
    async def wake(self, wake_key: str) -> None:
        """One small entry in this process's wake stream: a read blocked on it returns now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(wake_key, WAKE_TTL_SECONDS)
            await pipe.execute()

    @translate_redis_errors
    async def forget(self, wake_key: str) -> None:
        await self._redis.delete(wake_key)
