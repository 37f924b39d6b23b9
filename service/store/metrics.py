"""The fleet's metrics in Redis: each process adds its counts and sets its gauges here; any API
replica reads them all back for a scrape. The shapes (names, labels) are ``service.telemetry``'s."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from service.store import names
from service.store.connection import RedisStore, translate_redis_errors

GAUGE_TTL_SECONDS = 60  # a process that stops reporting drops out of the gauges by itself


@dataclass
class MetricsSnapshot:
    """Everything one scrape reads, in one round trip (after a SCAN for the live processes)."""

    counters: dict[str, float] = field(default_factory=dict)
    instances: list[dict[str, float]] = field(default_factory=list)  # each process's own gauges
    queued: dict[str, int] = field(default_factory=dict)  # jobs waiting, per plan
    running: dict[str, int] = field(default_factory=dict)  # jobs running, per plan
    retrying: int = 0  # jobs waiting to be due again: backing off, parked or deferred
    batch_pending: int = 0  # batch jobs prepared and waiting for their provider batch to be sent
    batch_open: int = 0  # provider batches sent and followed


class MetricsStore(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)

    @translate_redis_errors
    async def add(self, counts: dict[str, float], instance: str, gauges: dict[str, float]) -> None:
        """Adds ``counts`` to the fleet's counters and replaces ``instance``'s gauges, in one pipeline."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, value in counts.items():
                pipe.hincrbyfloat(names.METRICS_COUNTERS, name, value)
            if gauges:
                key = names.metrics_gauges(instance)
                pipe.hset(key, mapping=gauges)
                pipe.expire(key, GAUGE_TTL_SECONDS)
            await pipe.execute()

    @translate_redis_errors
    async def report_ages(self, instances: list[str], gauge_prefix: str) -> dict[str, float]:
        """Seconds since each of ``instances`` (``host:pid``) last reported a gauge named
        ``gauge_prefix``, for those that did: every report sets its hash's TTL to
        ``GAUGE_TTL_SECONDS`` again, so the TTL left tells. One round trip, no SCAN."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance in instances:
                pipe.hkeys(names.metrics_gauges(instance))
                pipe.pttl(names.metrics_gauges(instance))
            replies = await pipe.execute()
        ages = {}
        for instance, fields, ttl_ms in zip(instances, replies[::2], replies[1::2], strict=True):
            if ttl_ms > 0 and any(str(field).startswith(gauge_prefix) for field in fields):
                ages[instance] = max(0.0, GAUGE_TTL_SECONDS - ttl_ms / 1000)
        return ages

    @translate_redis_errors
    async def snapshot(self) -> MetricsSnapshot:
        match = names.METRICS_GAUGES_PREFIX + "*"
        gauge_keys = [key async for key in self._redis.scan_iter(match=match, count=500)]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(names.METRICS_COUNTERS)
            pipe.hgetall(names.QUEUED_COUNTS)
            pipe.hgetall(names.RUNNING_COUNTS)
            # Due later: waiting ones, and running ones (due at their lease's end).
            pipe.zcount(names.QUEUE, f"({int(time.time() * 1000)}", "+inf")
            pipe.zcard(names.BATCH_PENDING)
            pipe.zcard(names.BATCH_OPEN)
            for key in gauge_keys:
                pipe.hgetall(key)
            counters, queued, running, retrying, pending, batches, *instances = await pipe.execute()
        return MetricsSnapshot(
            counters={name: float(value) for name, value in counters.items()},
            instances=[{name: float(value) for name, value in gauges.items()} for gauges in instances],
            queued={plan: max(0, int(n)) for plan, n in queued.items()},
            running={plan: max(0, int(n)) for plan, n in running.items()},
            retrying=max(0, int(retrying) - sum(max(0, int(n)) for n in running.values())),
            batch_pending=int(pending),
            batch_open=int(batches),
        )
