"""Wake-ups for idle workers: the store's scripts publish on ``rs:wake`` when there may be work to pick
(a job submitted, unparked or cancelled); a worker listens with a pub/sub connection of its own."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis

from service.store import names
from service.store.connection import REDIS_DOWN, open_redis

log = structlog.get_logger(__name__)


class WakeSignal:
    """Set when there may be work to pick; listens on Redis pub/sub with its own connection."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, redis_url: str) -> None:
        self._task = asyncio.create_task(self._listen(redis_url), name="wake-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self, redis_url: str) -> None:
        failures = 0
        while True:
            client = open_redis(redis_url, fail_fast=False)
            try:
                await self._relay(client)
            except REDIS_DOWN as exc:
                failures += 1
                log.warning("wake_listener_reconnecting", error=type(exc).__name__, failures=failures)
                self.event.set()  # something may have been missed: poll once
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))
            finally:
                await client.aclose()

    async def _relay(self, client: Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(names.WAKE_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.event.set()
