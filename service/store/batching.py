"""One connection, many requests: the API's client pipelines what concurrent tasks send.

Under load, dozens of requests reach Redis in the same turn of the event loop, and redis-py sends
each of their commands on a connection of its own: a pool checkout, a write system call, a read and
a wake-up apiece, then its Python layers (retry, parse, release) around each. Most of a bare
endpoint's CPU is that round trip (measured in ``bench/RESULTS.md``), and Redis pays a read and a
write per command too. ``BatchingRedis`` writes the commands issued in one turn to one shared
connection in one write, and a single reader hands each reply, in order (RESP answers a connection's
commands in the order they came), to the caller waiting for it: not a transaction, so each command
still gets its own reply or its own error, and a caller sees exactly what ``Redis.execute_command``
would have returned or raised (the same response callbacks, the same exception classes).

What is not pipelined goes the ordinary way, on the pool's connections: blocking commands (they
would hold up the commands behind them), anything that changes a connection's state (``MULTI``,
``WATCH``, ``SELECT``...), pub/sub, and replies read undecoded. Pipelines and transactions that
callers build themselves use their own connection as before.

The shared connection has a deadline: when the oldest command still unanswered has waited longer
(a Redis that stopped answering, or one that cannot be reached), the connection is dropped and every
command on it fails with ``TimeoutError`` (which the stores turn into ``Unavailable``), so a frozen
Redis cannot pile up waiting requests. One timer per connection covers every command on it, not one
timer per command. A connection Redis closed (a restart) fails its unanswered commands with
``ConnectionError``; each is sent once more on a fresh connection, as redis-py's one retry would.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Commands that must keep a connection to themselves or that change its state.
DIRECT_COMMANDS = frozenset(
    {
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "XREAD",
        "XREADGROUP", "WAIT", "WAITAOF", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT",
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "CLIENT", "AUTH", "HELLO", "RESET", "QUIT",
    }
)  # fmt: skip

READ_SIZE = 65_536
# The hiredis reader's answer when the bytes so far hold no whole reply (a reply may be None).
_INCOMPLETE = object()


class _Link:
    """The shared connection: commands go out in order, and each reply goes to the caller waiting
    for it, in the same order. Connects in its own task; what is sent before that is written once
    it is up."""

    def __init__(self, connection: AbstractConnection, deadline: float) -> None:
        self._connection = connection
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._backlog: list[bytes] = []
        self._writer: asyncio.StreamWriter | None = None
        # (how many commands had been sent once this write was, when it was): the deadline's clock
        self._writes: collections.deque[tuple[int, float]] = collections.deque()
        self._sent = 0
        self._answered = 0
        self._timer: asyncio.TimerHandle | None = None
        self.failure: Exception | None = None
        self.last_used = self._loop.time()
        self._task = self._loop.create_task(self._run())

    @property
    def idle(self) -> bool:
        return not self._waiting

    def send(self, packed: list[bytes], futures: list[asyncio.Future[Any]]) -> None:
        self._waiting.extend(futures)
        self._sent += len(futures)
        now = self.last_used = self._loop.time()
        self._writes.append((self._sent, now))
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._deadline, self._check_deadline)
        if self._writer is None:
            self._backlog += packed
            return
        try:
            self._writer.write(b"".join(packed))
        except Exception as exc:  # the transport is closing: the reader is about to see it too
            self.close(RedisConnectionError(f"writing to Redis failed: {exc}"))

    def close(self, reason: Exception) -> None:
        self._fail(reason)
        self._task.cancel()

    async def closed(self) -> None:
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            # TLS, AUTH, SELECT and CLIENT SETNAME as the URL says, by redis-py's own connection
            await self._connection.connect()  # type: ignore[no-untyped-call]
            reader, self._writer = self._connection._reader, self._connection._writer
            if reader is None or self._writer is None:
                raise RedisConnectionError("the Redis connection did not open")
            if self._backlog:
                self._writer.write(b"".join(self._backlog))
                self._backlog.clear()
            await self._read_replies(reader, self._reply_parser())
        except Exception as exc:
            self._fail(exc if isinstance(exc, RedisConnectionError | RedisTimeoutError) else _lost(exc))
        except BaseException:
            self._fail(RedisConnectionError("the Redis client closed"))
            raise
        finally:
            await self._disconnect()

    async def _disconnect(self) -> None:
        writer = self._writer
        try:
            # Waits for the close to finish (a TLS close_notify) so no socket outlives the loop,
            # within redis-py's bound (the connect timeout)...
            await self._connection.disconnect()
        except Exception:
            if writer is not None:  # ...past which, a Redis that stopped reading: drop the socket
                writer.transport.abort()

    def _reply_parser(self) -> hiredis.Reader:
        # As redis-py's own hiredis parser reads: the same exception classes, the same decoding.
        encoder = self._connection.encoder
        options: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": BaseParser.parse_error,
            "notEnoughData": _INCOMPLETE,
        }
        if encoder.decode_responses:
            options.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
        return hiredis.Reader(**options)

    async def _read_replies(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            parser.feed(data)
            while (reply := parser.gets()) is not _INCOMPLETE:
                future = self._waiting.popleft()
                self._answered += 1
                if not future.done():  # a caller that gave up leaves its reply unread
                    future.set_result(reply)

    def _check_deadline(self) -> None:
        self._timer = None
        while self._writes and self._writes[0][0] <= self._answered:
            self._writes.popleft()
        if not self._writes:
            return
        oldest_unanswered_at = self._writes[0][1]
        if self._loop.time() - oldest_unanswered_at >= self._deadline:
            self.close(RedisTimeoutError(f"Redis did not answer within {self._deadline:g} s"))
            return
        self._timer = self._loop.call_at(oldest_unanswered_at + self._deadline, self._check_deadline)

    def _fail(self, reason: Exception) -> None:
        if self.failure is None:
            self.failure = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self.failure)


def _lost(exc: Exception) -> RedisConnectionError:
    failure = RedisConnectionError(f"the Redis connection failed: {exc}")
    failure.__cause__ = exc
    return failure


class _Script(AsyncScript):
    """A script called straight by its SHA1 on the client it was registered with (a submission's
    hot path): redis-py's own call costs about 5 us more (an import, tuples, a cache option). Called
    with another client (a pipeline), it goes redis-py's way."""

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if client is not None:
            return await super().__call__(keys, args, client)
        keys, args, redis = keys or (), args or (), cast("BatchingRedis", self.registered_client)
        try:
            return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or its scripts were flushed: load it and call again
            self.sha = await redis.script_load(self.script)
            return await redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class BatchingRedis(Redis):
    """A ``Redis`` client whose commands from one turn of the event loop go out in one write on one
    shared connection."""

    batch_deadline = 1.5  # seconds; ``open_redis`` sets the API's operation deadline
    # A connection unused this long is replaced before use rather than trusted: a load balancer or
    # NAT may have dropped it silently (redis-py's health check PINGs after the same interval).
    idle_reconnect = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._link: _Link | None = None
        self._packed: list[bytes] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._packer: AbstractConnection | None = None
        self._closed = False

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]  # redis-py types it sync
        return _Script(self, script)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if (
            self.single_connection_client
            or NEVER_DECODE in options
            or str(args[0]).upper() in DIRECT_COMMANDS
        ):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        try:
            reply = await self._pipelined(args)
        except RedisConnectionError:
            reply = await self._pipelined(args)  # once more, on a fresh connection (a Redis restart)
        return await self._parsed(args[0], reply, options)

    def _pipelined(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self._closed:
            raise RedisConnectionError("the Redis client is closed")
        if self._packer is None:  # an unconnected connection packs as the pool's would
            self._packer = self.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        packed = b"".join(self._packer.pack_command(*args))  # a bad argument raises here, to its caller
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._futures:
            loop.call_soon(self._flush)  # after every task of this turn has had its chance to add one
        self._packed.append(packed)
        self._futures.append(future)
        return future

    def _flush(self) -> None:
        packed, futures = self._packed, self._futures
        if not futures:  # the client closed in this turn
            return
        self._packed, self._futures = [], []
        self._usable_link().send(packed, futures)

    def _usable_link(self) -> _Link:
        link = self._link
        if link is not None and link.failure is None:
            if not (link.idle and asyncio.get_running_loop().time() - link.last_used > self.idle_reconnect):
                return link
            link.close(RedisConnectionError("replaced after being idle"))
        connection = self.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._link = _Link(connection, self.batch_deadline)
        return self._link

    async def _parsed(self, command_name: Any, reply: Any, options: dict[str, Any]) -> Any:
        """What ``Redis.parse_response`` makes of the reply."""
        if isinstance(reply, ResponseError) and EMPTY_RESPONSE in options:
            return options[EMPTY_RESPONSE]
        if isinstance(reply, Exception):
            raise reply
        options.pop(EMPTY_RESPONSE, None)
        options.pop("keys", None)
        if command_name in self.response_callbacks:
            parsed = self.response_callbacks[command_name](reply, **options)
            return await parsed if inspect.isawaitable(parsed) else parsed
        return reply

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self._closed = True
        for future in self._futures:  # added this turn, never to be sent now
            if not future.done():
                future.set_exception(RedisConnectionError("the Redis client closed"))
        self._packed, self._futures = [], []
        link, self._link = self._link, None
        if link is not None:
            link.close(RedisConnectionError("the Redis client closed"))
            await link.closed()
        await super().aclose(close_connection_pool)
