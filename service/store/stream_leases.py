"""Open event streams per user, counted across the fleet with leases in Redis.

One sorted set per user (``rs:streams:<user>``) holds a member per open stream, scored by when its
lease runs out (Redis's clock, ms). The API process holding a stream refreshes its lease while the
stream is open and removes it on close; a crashed process's leases simply run out. Admitting a new
stream prunes the expired leases and counts the rest in the same script, so two processes admitting
at once can never pass the cap together. Each script gets the one key it touches in KEYS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from service.store import names
from service.store.connection import RedisStore, translate_redis_errors

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the user's leases. ARGV: lease id, most open at once, lease ms.
# Returns 1 and holds the lease, or 0 (at the cap) having taken nothing.
ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
-- Every lease runs out by now + lease ms at the latest: so does the set, once nobody refreshes it.
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
)

# KEYS: the user's leases. ARGV: lease ms, then the lease ids this process still holds.
# A lease that ran out meanwhile (Redis unreachable for a while) is added back: its stream is open.
REFRESH = (
    _NOW_MS
    + """
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return #ARGV - 1
"""
)


class StreamLeaseStore(RedisStore):
    """Batches: the API's lease keeper sends every pending change of a moment in one round trip."""

    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._acquire = redis.register_script(ACQUIRE)
        self._refresh = redis.register_script(REFRESH)

    @translate_redis_errors
    async def acquire(self, wanted: Sequence[tuple[str, str]], *, cap: int, lease_ms: int) -> list[bool]:
        """For each (user id, lease id): whether it was granted (False: the user is at ``cap``)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, lease_id in wanted:
                await self._acquire(
                    keys=[names.stream_leases(user_id)], args=[lease_id, cap, lease_ms], client=pipe
                )
            granted = await pipe.execute()
        return [bool(answer) for answer in granted]

    @translate_redis_errors
    async def refresh(self, held: Mapping[str, Sequence[str]], *, lease_ms: int) -> None:
        """Extends every lease this process holds, by user, to ``lease_ms`` from now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, lease_ids in held.items():
                await self._refresh(
                    keys=[names.stream_leases(user_id)], args=[lease_ms, *lease_ids], client=pipe
                )
            await pipe.execute()

    @translate_redis_errors
    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, lease_id in leases:
                pipe.zrem(names.stream_leases(user_id), lease_id)
            await pipe.execute()

    @translate_redis_errors
    async def count(self, user_id: str) -> int:
        """Leases of ``user_id`` not yet run out (for tests and operators)."""
        now_s, now_us = await self._redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        found: int = await self._redis.zcount(names.stream_leases(user_id), now_ms + 1, "+inf")
        return found
