"""Opening Redis, and the one path from "Redis is unreachable" to the service's own ``Unavailable``.

Every Redis client the service uses comes from ``open_redis``; every store operation goes through
``translate_redis_errors``, so no caller above ``service.store`` ever sees a redis-py exception,
and the API's ``503 unavailable`` is built in one place (``redis_unavailable``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.core.errors import Unavailable
from service.store.batching import BatchingRedis

P = ParamSpec("P")
T = TypeVar("T")

# The client type, for the few places above the store that hand a client on without using it.
RedisClient = Redis

# Failures that say "Redis is not there right now" (down, restarting, failing over), as opposed to
# a bug in a command, which must surface as one.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)

# How long a client should wait before trying again when Redis is unreachable.
UNAVAILABLE_RETRY_AFTER = 2

# The API's bound on one store operation: a Redis that accepts connections but never answers
# (a partition, a frozen host) still gets a 503 in time. One deadline per operation is also
# cheaper than redis-py's per-read and per-write socket timeouts on the hot path.
API_OPERATION_DEADLINE = 1.5


def open_redis(
    url: str,
    *,
    fail_fast: bool,
    role: str | None = None,
    blocking_ms: int | None = None,
    batching: bool = False,
) -> Redis:
    """A client for the service's own keys (strings, not bytes).

    The API fails fast (with ``API_OPERATION_DEADLINE`` on its stores), so a request answers 503
    within about two seconds when Redis is down instead of hanging; workers ride out short blips
    with a few jittered reconnect attempts. A ``role`` gets one dedicated connection, named so in
    ``CLIENT LIST``; ``blocking_ms`` is how long its commands may block (its socket waits longer).
    ``batching`` writes the commands that concurrent tasks issue in one turn of the event loop in one
    write on one shared connection (``service.store.batching``): the API's shared client, where
    requests come in crowds.
    """
    # One retry even when failing fast: after a Redis restart every pooled connection is stale,
    # and the retry reconnects at once instead of answering 503 once per connection.
    retries = 0 if role is not None else 1 if fail_fast else 6
    socket_timeout = None if fail_fast else 5.0
    if blocking_ms is not None:
        socket_timeout = blocking_ms / 1000 + 5
    kind = BatchingRedis if batching else Redis
    client: Redis = kind.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        single_connection_client=role is not None,
        client_name=f"rs-{role}" if role is not None else None,
    )
    if isinstance(client, BatchingRedis):
        client.batch_deadline = API_OPERATION_DEADLINE
    return with_fast_packing(client)


def open_subscriber(url: str) -> Redis:
    """A client for one pub/sub subscription: no socket timeout (a subscribed connection is silent
    until a message), and a PING a minute from redis-py's health check to find a dead one."""
    client: Redis = Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2.0, health_check_interval=60
    )
    return with_fast_packing(client)


class _HiredisPacking:
    """Packs commands with hiredis's C packer: redis-py's asyncio connections pack in Python, which
    for a script call of twenty arguments costs more CPU (~55 us) than the rest of the client. The
    bytes are the same (floats are written as ``repr`` writes them); anything hiredis does not take
    (a memoryview, or a type redis-py refuses with its own error) goes the Python way."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CONFIG GET": redis-py splits the name
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


_FAST_CLASSES: dict[str, type[AbstractConnection]] = {}


def _fast(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(connection_class, _HiredisPacking):
        return connection_class
    name = f"Hiredis{connection_class.__name__}"
    if name not in _FAST_CLASSES:
        _FAST_CLASSES[name] = type(name, (_HiredisPacking, connection_class), {})
    return _FAST_CLASSES[name]


def with_fast_packing(client: Redis) -> Redis:
    """The client, its pool making connections (TCP, TLS or Unix socket alike) that pack in C."""
    pool = client.connection_pool
    pool.connection_class = _fast(pool.connection_class)
    return client


def worker_retry_options() -> dict[str, Any]:
    """redis-py retry settings for arq's own connection (``RedisSettings`` attributes): arq's poll
    loop dies on the first Redis error unless its commands retry, so ride out a restart or failover
    of up to about half a minute, then let the platform restart the process."""
    return {
        "conn_retries": 10,
        "retry_on_timeout": True,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, BusyLoadingError],
        "retry": Retry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), 20),
    }


def redis_unavailable() -> Unavailable:
    return Unavailable("the job store is unreachable; retry shortly", retry_after=UNAVAILABLE_RETRY_AFTER)


class RedisStore:
    """Base of the stores: a client and, for the API, a deadline on each operation."""

    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        self._redis = redis
        self.deadline = deadline


def translate_redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorates a store operation so callers only ever see ``Unavailable``, never redis errors.

    On a ``RedisStore`` method it also enforces the store's deadline (a timeout is an OSError).
    """
    return _translating(fn, bounded=True)


def translate_one_command_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The same for an operation that is one command (a script call, say): on a batching client
    the shared connection's deadline bounds it already, so it arms no timer of its own (on the hot
    path of every submission); on any other client the store's deadline applies as usual."""
    return _translating(fn, bounded=True, one_command=True)


def translate_blocking_redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The same for an operation meant to block (a blocking read): no store deadline; its
    connection's socket timeout bounds a Redis that stops answering."""
    return _translating(fn, bounded=False)


def _translating(
    fn: Callable[P, Awaitable[T]], *, bounded: bool, one_command: bool = False
) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0] if args and isinstance(args[0], RedisStore) else None
        deadline = store.deadline if store is not None and bounded else None
        if one_command and store is not None and isinstance(store._redis, BatchingRedis):
            deadline = None
        try:
            if deadline is None:  # a worker's store, or a blocking read: no timer to arm and cancel
                return await fn(*args, **kwargs)
            async with asyncio.timeout(deadline):
                return await fn(*args, **kwargs)
        except REDIS_DOWN as exc:
            raise redis_unavailable() from exc

    return wrapper


class Health(RedisStore):
    """``GET /readyz``'s question: does Redis answer within the deadline?"""

    @translate_redis_errors
    async def ping(self) -> None:
        await self._redis.ping()
