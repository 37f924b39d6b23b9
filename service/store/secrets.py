"""The events-token signing secret, shared by every API replica through Redis unless configured."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from service.store.connection import translate_redis_errors

_KEY = "rs:signing-secret"


@translate_redis_errors
async def shared_signing_secret(redis: Redis) -> bytes:
    """The first replica to start generates it; every other one reads the same value."""
    await redis.set(_KEY, secrets.token_urlsafe(48), nx=True)
    value: str | None = await redis.get(_KEY)
    if value is None:  # only if someone deleted it between the two calls
        raise RuntimeError("the shared signing secret vanished from Redis while starting")
    return value.encode()
