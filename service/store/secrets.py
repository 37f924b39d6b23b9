"""The events-token signing secret, shared by every API replica through Redis unless configured."""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from service.store import names
from service.store.connection import translate_redis_errors


@translate_redis_errors
async def shared_signing_secret(redis: Redis, *, deadline: float | None = None) -> bytes:
    """The first replica to start generates it; every other one reads the same value. ``deadline``
    bounds the two round trips (a Redis that stops answering is ``Unavailable``, not a hang)."""
    async with asyncio.timeout(deadline):
        await redis.set(names.SIGNING_KEY_NAME, secrets.token_urlsafe(48), nx=True)
        value: str | None = await redis.get(names.SIGNING_KEY_NAME)
    if value is None:  # only if someone deleted it between the two calls
        raise RuntimeError("the shared signing secret vanished from Redis while starting")
    return value.encode()
