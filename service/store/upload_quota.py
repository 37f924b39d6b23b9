"""Per-user upload limits: a rate (token bucket) and a quota of bytes stored, freed as uploads expire.

Two keys per user, both passed in KEYS: a hash (``rs:uploads:<user>``: the bucket's ``tokens`` and
``ms``, and ``used``, the bytes of uploads still kept) and a sorted set (``rs:upload-sizes:<user>``)
of ``<input id>:<bytes>`` scored by when the upload expires (INPUT_RETENTION_SECONDS after it, on
Redis's clock). The script that admits an upload first drops the expired ones from both, so the
quota frees itself exactly as uploads expire, with no sweeper. It charges the upload before the
bytes are stored: the caller refunds it (``REFUND``) if storing fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.store import names
from service.store.connection import RedisStore, translate_redis_errors

SCAN_LIMIT = 1000  # oldest uploads looked at to say when a refused one would fit

# KEYS: the user's hash, the user's sorted set
# ARGV: uploads per minute, burst (0 per minute: no rate), quota bytes (0: none), this upload's
#       bytes, its input id, retention ms
# Returns {1, used} admitted and charged; {-1, ms to wait} too fast; {-2, used, ms when it fits}
# over the quota (0: never, it alone is larger; negative: not before minus that). A refused
# upload writes nothing but its rate token: trying is what the rate counts.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_minute, burst, quota = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local size, retention = tonumber(ARGV[4]), tonumber(ARGV[6])
local function bytes_of(member) return tonumber(string.match(member, ':(%d+)$')) or 0 end

local freed = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  freed = freed + bytes_of(member)
end
if freed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[1], 'used', -freed)
end

if per_minute > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
  local refill = (now - (tonumber(b[2]) or now)) * per_minute / 60000
  local tokens = math.min(burst, (tonumber(b[1]) or burst) + refill)
  if tokens < 1 then return {-1, math.ceil((1 - tokens) * 60000 / per_minute)} end
  redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'ms', now)
  -- kept until the bucket is full again, or as long as the bytes it counts, whichever is later
  local full_in = math.ceil(burst * 60000 / per_minute) + 1000
  redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[1]), full_in))
end

local used = math.max(0, tonumber(redis.call('HGET', KEYS[1], 'used')) or 0)
if quota > 0 and used + size > quota then
  if size > quota then return {-2, used, 0} end
  local oldest = redis.call('ZRANGE', KEYS[2], 0, @SCAN_LIMIT@ - 1, 'WITHSCORES')
  local left = used
  for i = 1, #oldest, 2 do
    left = left - bytes_of(oldest[i])
    if left + size <= quota then return {-2, used, tonumber(oldest[i + 1])} end
  end
  return {-2, used, -(tonumber(oldest[#oldest]) or now)}
end

redis.call('ZADD', KEYS[2], now + retention, ARGV[5] .. ':' .. size)
redis.call('HSET', KEYS[1], 'used', used + size)
-- Nothing here outlives the newest upload's expiry.
redis.call('PEXPIRE', KEYS[2], retention)
redis.call('PEXPIRE', KEYS[1], retention)
return {1, used + size}
""".replace("@SCAN_LIMIT@", str(SCAN_LIMIT))

# KEYS: the user's hash, the user's sorted set. ARGV: input id, bytes.
# Gives a charged upload back (its bytes could not be stored); once only, however often called.
REFUND = """
if redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2]) == 1 then
  local used = tonumber(redis.call('HINCRBY', KEYS[1], 'used', -tonumber(ARGV[2])))
  if used < 0 then redis.call('HSET', KEYS[1], 'used', 0) end
  return 1
end
return 0
"""


@dataclass(frozen=True)
class UploadPolicy:
    per_minute: int  # 0: no rate limit
    burst: int
    quota_bytes: int  # 0: no quota
    retention_ms: int


@dataclass(frozen=True)
class Admission:
    """``kind``: "admitted", "rate_limited" (``wait_ms``) or "over_quota" (``used``, and
    ``fits_at_ms``: when enough expires for it to fit; 0 never; negative: not before its opposite)."""

    kind: str
    used: int = 0
    wait_ms: int = 0
    fits_at_ms: int = 0


class UploadQuotaStore(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._admit = redis.register_script(ADMIT)
        self._refund = redis.register_script(REFUND)

    @translate_redis_errors
    async def admit(self, user_id: str, input_id: str, size: int, policy: UploadPolicy) -> Admission:
        """Charges the upload to the user's quota, or says why not (charging nothing)."""
        keys = [names.uploads(user_id), names.upload_sizes(user_id)]
        args: list[int | str] = [
            policy.per_minute, policy.burst, policy.quota_bytes, size, input_id, policy.retention_ms
        ]  # fmt: skip
        answer = [int(value) for value in await self._admit(keys=keys, args=args)]
        if answer[0] == 1:
            return Admission("admitted", used=answer[1])
        if answer[0] == -1:
            return Admission("rate_limited", wait_ms=answer[1])
        return Admission("over_quota", used=answer[1], fits_at_ms=answer[2])

    @translate_redis_errors
    async def refund(self, user_id: str, input_id: str, size: int) -> None:
        keys = [names.uploads(user_id), names.upload_sizes(user_id)]
        await self._refund(keys=keys, args=[input_id, size])

    @translate_redis_errors
    async def used(self, user_id: str) -> int:
        """Bytes charged to the user now (expired uploads are dropped at the next admission)."""
        value = await self._redis.hget(names.uploads(user_id), "used")  # type: ignore[misc]
        return max(0, int(value or 0))
