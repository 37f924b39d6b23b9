"""How a worker hears of work without polling: idle workers block on the marker (``BZPOPMIN
rs:marker``), which the store's scripts set when a job becomes due at once (submitted, unparked,
handed back), so one idle worker wakes per marker; and every worker listens on ``rs:cancel`` for the
running jobs users cancel, and on ``rs:webhooks:wake`` for webhooks that became due. Each uses a
connection of its own, so a block never holds a pooled one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import structlog
from redis.asyncio import Redis

from service.store import names
from service.store.connection import REDIS_DOWN, open_redis, open_subscriber, redis_unavailable

log = structlog.get_logger(__name__)

# The longest one BZPOPMIN may block (WORKER_IDLE_POLL_SECONDS is at most this): an idle worker looks
# at the queue this often even if nothing wakes it.
MAX_BLOCK_SECONDS = 300.0


class WorkMarker:
    """The blocking wait of an idle worker."""

    def __init__(self, redis_url: str, longest_block: float = MAX_BLOCK_SECONDS) -> None:
        self.longest_block = min(longest_block, MAX_BLOCK_SECONDS)
        self._client = open_redis(
            redis_url, fail_fast=False, role="worker-marker", blocking_ms=int(self.longest_block * 1000)
        )

    async def wait(self, seconds: float) -> bool:
        """Blocks up to ``seconds`` (at most ``longest_block``) for the marker; True when it came.
        Raises ``Unavailable`` when Redis is unreachable."""
        timeout = max(0.01, min(seconds, self.longest_block))
        try:
            return await self._client.bzpopmin(names.MARKER, timeout=round(timeout, 3)) is not None
        except REDIS_DOWN as exc:
            raise redis_unavailable() from exc

    async def aclose(self) -> None:
        await self._client.aclose()


class ChannelListener:
    """One pub/sub connection per worker for what the fleet announces: ``handlers`` maps a channel
    (``rs:cancel``: a running job a user cancelled, which the worker running it stops;
    ``rs:webhooks:wake``: a job whose webhook is due) to what to call with each message."""

    def __init__(self, redis_url: str, handlers: Mapping[str, Callable[[str], None]]) -> None:
        self._url = redis_url
        self._handlers = dict(handlers)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="channel-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        failures = 0
        while True:
            client = open_subscriber(self._url)
            try:
                await self._relay(client)
            except REDIS_DOWN as exc:
                failures += 1
                log.warning("channel_listener_reconnecting", error=type(exc).__name__, failures=failures)
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))
            finally:
                await client.aclose()

    async def _relay(self, client: Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(*self._handlers)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=60.0)
                if message is not None and message.get("type") == "message":
                    handler = self._handlers.get(str(message["channel"]))
                    if handler is not None:
                        handler(str(message["data"]))
