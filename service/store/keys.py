"""API keys: created once, stored only as SHA-256 digests, looked up on every request."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from service.core.clock import iso_from_ms, now_ms
from service.store import names
from service.store.connection import RedisStore, translate_redis_errors
from service.store.ttl_cache import TtlCache

PLANS = ("free", "pro")
KEY_PREFIX = "rsk_"
# Every key ever minted is the prefix and ``secrets.token_urlsafe(32)``: 43 URL-safe characters.
# Anything else is refused without asking Redis.
_KEY_SHAPE = re.compile(r"rsk_[A-Za-z0-9_-]{43}")
CACHE_LIMIT = 10_000  # entries in each of the caches below, per API process
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the only identity handlers ever see."""

    user_id: str
    plan: str
    key_id: str


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    user_id: str
    plan: str
    created_at: str | None
    revoked_at: str | None


def digest_of(api_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(api_key.encode()).hexdigest()


def check_user_id(user_id: str) -> str:
    if not USER_ID_PATTERN.match(user_id):
        raise ValueError("a user id is 1-64 characters: letters, digits, '.', '_', '@', '-'")
    return user_id


def check_plan(plan: str) -> str:
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {', '.join(PLANS)}")
    return plan


class KeyStore(RedisStore):
    """``cache_seconds`` > 0 remembers recent successful lookups in this process: a key revoked
    elsewhere then stops working within that many seconds instead of at once. ``unknown_seconds``
    > 0 remembers digests Redis did not know (or knew revoked) for that long, so a client
    hammering with one bad key costs one Redis read per that many seconds, not one per request.
    Neither cache can make a bad key work: the first only holds keys Redis vouched for."""

    def __init__(
        self,
        redis: Redis,
        *,
        cache_seconds: float = 0,
        unknown_seconds: float = 0,
        deadline: float | None = None,
    ) -> None:
        super().__init__(redis, deadline=deadline)
        self._known: TtlCache[str, Caller] = TtlCache(cache_seconds, limit=CACHE_LIMIT)
        self._unknown: TtlCache[str, bool] = TtlCache(unknown_seconds, limit=CACHE_LIMIT)
        # A key id's digest never changes (the id is its prefix): remembered as long as it is used.
        self._digests: TtlCache[str, str] = TtlCache(
            max(cache_seconds, unknown_seconds, 60), limit=CACHE_LIMIT
        )
        self._reading: dict[str, asyncio.Future[Caller | None]] = {}  # lookups in flight, by digest

    @translate_redis_errors
    async def create(self, user_id: str, plan: str) -> tuple[str, KeyInfo]:
        """Mints a key; the plain key is returned once and never stored."""
        check_user_id(user_id)
        check_plan(plan)
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = digest_of(api_key)
        key_id = digest[:12]
        created = now_ms()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                names.api_key(digest),
                mapping={"key_id": key_id, "user_id": user_id, "plan": plan, "created_ms": created},
            )
            pipe.hset(names.API_KEYS_INDEX, key_id, digest)
            await pipe.execute()
        return api_key, KeyInfo(key_id, user_id, plan, iso_from_ms(created), None)

    async def authenticate(self, api_key: str) -> Caller | None:
        """The caller a bearer key belongs to; None for an unknown, revoked or malformed key."""
        if not _KEY_SHAPE.fullmatch(api_key):
            return None
        digest = digest_of(api_key)
        # Every request asks: a key this process knows is answered without a deadline to arm.
        cached = self._known.get(digest)
        return cached if cached is not None else await self._looked_up(digest)

    @translate_redis_errors
    async def _looked_up(self, digest: str) -> Caller | None:
        return await self._caller(digest)

    @translate_redis_errors
    async def by_key_id(self, key_id: str) -> Caller | None:
        """The caller of a key named by its id (as events tokens name the key that minted them);
        None when no such key exists or it was revoked. Cached like ``authenticate``."""
        digest = self._digests.get(key_id)
        if digest is None:
            digest = await self._redis.hget(names.API_KEYS_INDEX, key_id)  # type: ignore[misc]
            if digest is None:
                return None
            self._digests.put(key_id, digest)
        return await self._caller(digest)

    async def _caller(self, digest: str) -> Caller | None:
        cached = self._known.get(digest)
        if cached is not None:
            return cached
        if self._unknown.get(digest):
            return None
        # Requests that arrive together with one key share one read: a flood of concurrent
        # requests would otherwise all miss the cache before the first answer fills it.
        reading = self._reading.get(digest)
        if reading is None:
            reading = self._reading[digest] = asyncio.ensure_future(self._read(digest))
            reading.add_done_callback(lambda done: self._read_finished(digest, done))
        return await asyncio.shield(reading)  # one waiter giving up does not cancel the others' read

    async def _read(self, digest: str) -> Caller | None:
        async with asyncio.timeout(self.deadline):  # shared: no single request's deadline bounds it
            fields = await self._redis.hgetall(names.api_key(digest))  # type: ignore[misc]
        if not fields or fields.get("revoked_ms"):
            self._unknown.put(digest, True)
            return None
        caller = Caller(user_id=fields["user_id"], plan=fields["plan"], key_id=fields["key_id"])
        self._known.put(digest, caller)
        return caller

    def _read_finished(self, digest: str, done: asyncio.Future[Caller | None]) -> None:
        self._reading.pop(digest, None)
        if not done.cancelled():
            done.exception()  # retrieved: when every waiter left, asyncio must not log it as lost

    @translate_redis_errors
    async def list(self) -> list[KeyInfo]:
        digests = await self._redis.hgetall(names.API_KEYS_INDEX)  # type: ignore[misc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest in digests.values():
                pipe.hgetall(names.api_key(digest))
            rows: list[dict[str, str]] = await pipe.execute()
        infos = [_key_info(row) for row in rows if row]
        return sorted(infos, key=lambda info: (info.user_id, info.created_at or ""))

    @translate_redis_errors
    async def revoke(self, key_or_id: str) -> KeyInfo | None:
        """Revokes by key id (as `keys list` shows it) or by the key itself."""
        key_id = digest_of(key_or_id)[:12] if key_or_id.startswith(KEY_PREFIX) else key_or_id
        digest = await self._redis.hget(names.API_KEYS_INDEX, key_id)  # type: ignore[misc]
        if digest is None:
            return None
        record = names.api_key(digest)
        await self._redis.hsetnx(record, "revoked_ms", str(now_ms()))  # type: ignore[misc]
        return _key_info(await self._redis.hgetall(record))  # type: ignore[misc]


def _key_info(row: dict[str, str]) -> KeyInfo:
    revoked = row.get("revoked_ms")
    return KeyInfo(
        key_id=row["key_id"],
        user_id=row["user_id"],
        plan=row["plan"],
        created_at=iso_from_ms(int(row["created_ms"])),
        revoked_at=iso_from_ms(int(revoked)) if revoked else None,
    )
