"""Lua scripts of the webhook deliveries (``service.store.webhooks``): each one atomic step, each key
it touches handed in KEYS (no name is built inside Lua), times from Redis's own clock.

The job record's ``callback_state`` and ``callback_attempts`` mirror the delivery for the status
object; they are written only while the record still has its ``callback_url`` (never into a
tombstone, and never recreating a record that expired).
"""

from __future__ import annotations

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ended(state) return state == 'completed' or state == 'failed' or state == 'cancelled' end
"""

# For the scripts whose KEYS[3] is the job record.
_MIRROR = """
local function mirror(state, attempts)
  if redis.call('HEXISTS', KEYS[3], 'callback_url') == 1 then
    redis.call('HSET', KEYS[3], 'callback_state', state, 'callback_attempts', attempts)
  end
end
"""

# KEYS: due; ARGV: most ids to return
# The deliveries due now by Redis's clock (the claim checks again: another worker may be faster),
# then the ms until the first one not yet due (-1: none): {ids..., ms}.
DUE = (
    _COMMON
    + """
local now, n = now_ms(), tonumber(ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], '-inf', '+inf', 'BYSCORE', 'LIMIT', 0, n + 1, 'WITHSCORES')
local due, next_ms = {}, -1
for i = 1, #first, 2 do
  local at = tonumber(first[i + 1])
  if at <= now and #due < n then
    due[#due + 1] = first[i]
  elseif at > now then
    next_ms = at - now
    break
  end
end
due[#due + 1] = next_ms
return due
"""
)

# KEYS: due, delivery, job record
# ARGV: job id, lease ms, lease token, seconds the delivery's state is kept, give-up ms
# Leases a due delivery to this worker: its entry in ``due`` moves to the lease's end, so a worker
# that dies mid-attempt hands it on by itself. The first claim creates the delivery from the record.
# Returns false (not due, taken, nothing to deliver), {'gave_up', attempts} (past the give-up time
# with attempts already made) or {'claimed', attempts, url, user, message id, body, first ms}.
CLAIM = (
    _COMMON
    + _MIRROR
    + """
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local f = redis.call('HMGET', KEYS[3], 'state', 'callback_url', 'user_id', 'callback_state')
  if not f[2] or not ended(f[1]) or (f[4] and f[4] ~= 'pending') then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return false
  end
  redis.call('HSET', KEYS[2], 'url', f[2], 'user_id', f[3], 'attempts', 0, 'first_ms', now)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
local d = redis.call('HMGET', KEYS[2], 'attempts', 'first_ms')
local made = tonumber(d[1])
if made > 0 and now - tonumber(d[2]) >= tonumber(ARGV[5]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  mirror('failed', made)
  return {'gave_up', made}
end
local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('HSET', KEYS[2], 'lease', ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
mirror('pending', attempts)
local m = redis.call('HMGET', KEYS[2], 'url', 'user_id', 'msg_id', 'body', 'first_ms')
return {'claimed', attempts, m[1], m[2], m[3] or '', m[4] or '', m[5]}
"""
)

# KEYS: delivery; ARGV: message id, body
# The message of a delivery is written once, at its first attempt, and every retry sends the same
# bytes under the same id; a worker racing another one (after a lease ran out) gets the first one's.
# Returns {message id, body}, or false when the delivery is no longer pending.
KEEP_MESSAGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HEXISTS', KEYS[1], 'body') == 0 then
  redis.call('HSET', KEYS[1], 'msg_id', ARGV[1], 'body', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'msg_id', 'body')
"""

# KEYS: due, delivery, job record
# ARGV: job id, lease token, outcome ('delivered', 'failed' or 'retry'), retry delay ms, give-up ms
# Records how the attempt holding this lease ended; a stale lease (it ran out and another worker took
# the delivery) changes nothing. A retry that would come after the give-up time fails instead.
# Returns 'stale', 'retry', 'delivered' or 'failed'.
SETTLE = (
    _COMMON
    + _MIRROR
    + """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 'stale' end
local now = now_ms()
local d = redis.call('HMGET', KEYS[2], 'attempts', 'first_ms')
local outcome = ARGV[3]
if outcome == 'retry' then
  local next_at = now + tonumber(ARGV[4])
  if next_at - tonumber(d[2]) < tonumber(ARGV[5]) then
    redis.call('ZADD', KEYS[1], next_at, ARGV[1])
    redis.call('HDEL', KEYS[2], 'lease')
    return 'retry'
  end
  outcome = 'failed'
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
mirror(outcome, tonumber(d[1]))
return outcome
"""
)

# KEYS: due, delivery; ARGV: job id, lease token
# A worker stopping mid-attempt gives its lease back: the delivery is due again at once, elsewhere.
RELEASE = (
    _COMMON
    + """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], 'lease')
redis.call('ZADD', KEYS[1], 'XX', now_ms(), ARGV[1])
return 1
"""
)
