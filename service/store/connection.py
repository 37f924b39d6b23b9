"""Opening Redis and translating its failures into the service's own errors."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.core.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")

# Failures that say "Redis is not there right now" (down, restarting, failing over), as opposed to
# a bug in a command, which must surface as one.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)

# How long a client should wait before trying again when Redis is unreachable.
UNAVAILABLE_RETRY_AFTER = 2


# The API's bound on one store operation: a Redis that accepts connections but never answers
# (a partition, a frozen host) still gets a 503 in time. One deadline per operation is also
# cheaper than redis-py's per-read and per-write socket timeouts on the hot path.
API_OPERATION_DEADLINE = 1.5


def open_redis(url: str, *, fail_fast: bool) -> Redis:
    """A client for the service's own keys (strings, not bytes).

    The API fails fast (with ``API_OPERATION_DEADLINE`` on its stores), so a request answers 503
    within about two seconds when Redis is down instead of hanging; workers ride out short blips
    with a few jittered reconnect attempts.
    """
    # One retry even when failing fast: after a Redis restart every pooled connection is stale,
    # and the retry reconnects at once instead of answering 503 once per connection.
    retries = 1 if fail_fast else 6
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=None if fail_fast else 5.0,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
    )
    return client


class RedisStore:
    """Base of the stores: a client and, for the API, a deadline on each operation."""

    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        self._redis = redis
        self.deadline = deadline


def translate_redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorates a store operation so callers only ever see ``Unavailable``, never redis errors.

    On a ``RedisStore`` method it also enforces the store's deadline (a timeout is an OSError).
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        deadline = args[0].deadline if args and isinstance(args[0], RedisStore) else None
        try:
            async with asyncio.timeout(deadline):
                return await fn(*args, **kwargs)
        except REDIS_DOWN as exc:
            raise Unavailable(
                "the job store is unreachable; retry shortly", retry_after=UNAVAILABLE_RETRY_AFTER
            ) from exc

    return wrapper
