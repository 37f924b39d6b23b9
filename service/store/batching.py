"""One write for the commands of many requests: the API's client batches what concurrent tasks send.

Under load, dozens of requests reach Redis in the same turn of the event loop, and redis-py sends
each of their commands on a connection of its own: a pool checkout, a write system call, a read and
a wake-up apiece. Most of a bare endpoint's CPU is that round trip (about half of it, measured in
``bench/RESULTS.md``), and Redis pays a read and a write per command too. ``BatchingRedis`` collects
the commands issued in one turn and sends them as one pipeline (not a transaction) on one
connection: each command still gets its own reply or its own error, in order, and a caller sees
exactly what ``Redis.execute_command`` would have returned or raised.

What is not batched goes the ordinary way: blocking commands (they would hold up the commands
behind them), anything that changes a connection's state (``MULTI``, ``WATCH``, ``SELECT``...), and
pub/sub. Pipelines and transactions that callers build themselves use their own connection as before.

A batch has its own deadline: a Redis that stops answering fails every command of the batch with
``TimeoutError`` (which the stores turn into ``Unavailable``), and its connection is dropped, so a
frozen Redis cannot pile up connections waiting forever.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

# Commands that must keep a connection to themselves or that change its state.
DIRECT_COMMANDS = frozenset(
    {
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "XREAD",
        "XREADGROUP", "WAIT", "WAITAOF", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT",
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "CLIENT", "AUTH", "HELLO", "RESET", "QUIT",
    }
)  # fmt: skip

Command = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]

# At most this many commands a batch: a turn's crowd goes as a few batches on as many connections,
# so while Redis runs the second batch's scripts the API already works on the first one's replies,
# instead of the two taking turns at idling.
MAX_BATCH = 8


class BatchingRedis(Redis):
    """A ``Redis`` client whose commands from one turn of the event loop share one round trip."""

    batch_deadline = 1.5  # seconds; ``open_redis`` sets the API's operation deadline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Command] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # strong references until each batch is done

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.single_connection_client or str(args[0]).upper() in DIRECT_COMMANDS:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        batch = self._pending
        if batch is None:
            batch = self._pending = []
            # After every task that runs in this turn has had its chance to add a command.
            loop.call_soon(self._send_batch, batch)
        batch.append((args, options, future))
        if len(batch) >= MAX_BATCH:
            self._pending = None  # full: the next command opens another, sent in the same turn
        return await future

    def _send_batch(self, batch: list[Command]) -> None:
        if self._pending is batch:
            self._pending = None
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Command]) -> None:
        live = [command for command in batch if not command[2].done()]  # a caller may have given up
        if not live:
            return
        try:
            async with asyncio.timeout(self.batch_deadline):
                results = await self._round_trip(live)
        except BaseException as exc:  # the connection failed, the deadline passed, or the client closed
            failure = exc if isinstance(exc, Exception) else RedisConnectionError("the Redis client closed")
            for _, _, future in live:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)  # that command's own error (a ResponseError)
            else:
                future.set_result(result)

    async def _round_trip(self, live: list[Command]) -> list[Any]:
        if len(live) == 1:  # nothing to share: the plain path, without a pipeline's own costs
            args, options, _ = live[0]
            return [await super().execute_command(*args, **options)]  # type: ignore[no-untyped-call]
        pipe = self.pipeline(transaction=False)
        for args, options, _ in live:
            pipe.execute_command(*args, **options)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        for task in list(self._sending):
            task.cancel()
        await super().aclose(close_connection_pool)
