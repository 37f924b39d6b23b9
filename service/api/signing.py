"""The events-token signing secret, as one API process knows it.

Configured (``SIGNING_SECRET``): that value, always. Otherwise the secret is shared through Redis
(``service.store.secrets``) and this process keeps a copy. After a Redis data loss the replicas can
disagree: one that restarted generated a new shared secret while the others still hold the old one.
So a token that fails verification makes this process read the shared secret again (at most once
every ``REREAD_AFTER_FAILURE_SECONDS``, so a flood of bad tokens costs one Redis read per window),
then verify once more; and minting reads it again at most every ``REREAD_WHEN_SIGNING_SECONDS``, so a
stale replica stops handing out tokens the others refuse within that time. The secret replaced is
still accepted here for one token lifetime: the tokens this process signed with it expire by then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.core.settings import Settings
from service.store.connection import API_OPERATION_DEADLINE, RedisClient
from service.store.secrets import shared_signing_secret

REREAD_AFTER_FAILURE_SECONDS = 5.0
REREAD_WHEN_SIGNING_SECONDS = 60.0


class SigningSecrets:
    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        configured = settings.signing_secret
        self._configured = configured.get_secret_value().encode() if configured is not None else None
        self._redis = redis
        self._token_lifetime = settings.events_token_ttl_seconds
        self._current: bytes | None = None
        self._previous: tuple[bytes, float] | None = None  # and until when (monotonic) it is accepted
        self._signing_read_at = self._failure_read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> bytes:
        """The secret to sign with; fetched lazily so the API starts while Redis is down."""
        if self._configured is not None:
            return self._configured
        if (
            self._current is not None
            and time.monotonic() - self._signing_read_at < REREAD_WHEN_SIGNING_SECONDS
        ):
            return self._known()  # fresh: no lock to take on every request
        async with self._lock:
            if (
                self._current is None
                or time.monotonic() - self._signing_read_at >= REREAD_WHEN_SIGNING_SECONDS
            ):
                self._signing_read_at = time.monotonic()
                await self._read()
            return self._known()

    async def verify(self, signed_with: Callable[[bytes], bool]) -> bool:
        """Whether ``signed_with`` holds for a secret this process accepts, the shared secret read
        again (within the failure budget) when it holds for none of them."""
        if self._configured is not None:
            return signed_with(self._configured)
        async with self._lock:
            if self._current is None:
                await self._read()
        if any(signed_with(secret) for secret in self._accepted()):
            return True
        before = self._current
        async with self._lock:  # concurrent failures wait for one read, then all use its answer
            if time.monotonic() - self._failure_read_at >= REREAD_AFTER_FAILURE_SECONDS:
                self._failure_read_at = time.monotonic()  # before the read: a failed one waits too
                await self._read()
        return self._current != before and signed_with(self._known())

    def _known(self) -> bytes:
        assert self._current is not None, "read before use"
        return self._current

    def _accepted(self) -> list[bytes]:
        accepted = [self._known()]
        if self._previous is not None and self._previous[1] > time.monotonic():
            accepted.append(self._previous[0])
        return accepted

    async def _read(self) -> None:
        # Bounded: every token check and every signing waits on this read while it runs.
        secret = await shared_signing_secret(self._redis, deadline=API_OPERATION_DEADLINE)
        if self._current is not None and secret != self._current:
            self._previous = (self._current, time.monotonic() + self._token_lifetime)
        self._current = secret
