"""Lua scripts of the shared LLM rate limiter: three token buckets and a pause, per model, in one hash.

One hash per model (``rs:llm:{model}:buckets``) holds the levels of the request, input-token and
output-token buckets (``r``, ``i``, ``o``), the server time they were last brought up to date (``t``,
microseconds) and the provider's pause deadline (``pause``, microseconds). A missing field means a full
bucket, so the hash expires once every bucket is full again and the pause is over: nothing stale stays.

What the provider's headers taught (``FOLD``), per bucket ``b`` in ``r``, ``i``, ``o``: ``bc``, the
fleet's own net spend so far (a counter; a grant carries its value, so a later fold knows what the
fleet spent since that response's snapshot), ``bf``, the rate (per second) at which others spend
from the same provider account, which slows the bucket's refill, and ``bp``, ``bt``, ``bq``: the
provider's level as last estimated, when, and the counter then. ``ep`` names the hash's lifetime
(counters of an expired hash mean nothing to a new one).

Time is always Redis's own (``TIME``): workers on hosts with skewed clocks still agree. Redis >= 5
replicates a script's effects, not the script, so reading the clock before writing is allowed.
Capacities are one minute of each limit and come in ARGV on every call: the limits live in settings.
"""

from __future__ import annotations

_PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function caps_from(args)
  return {tonumber(args[1]), tonumber(args[2]), tonumber(args[3])}
end
local NAMES = {'r', 'i', 'o'}
-- Per second: capacity per minute, less what others are seen to spend from the provider's account.
local function refill_rate(cap, foreign)
  return math.max(cap / 600, cap / 60 - foreign)
end
-- The levels as of now: refilled continuously, never above capacity; and the others' rates.
local function load(key, caps, now)
  local f = redis.call('HMGET', key, 'r', 'i', 'o', 't', 'pause', 'rf', 'if', 'of')
  local last = tonumber(f[4])
  -- a clock stepping backwards (failover to a replica) refills nothing rather than draining
  local elapsed = last and math.max(0, now - last) / 1000000 or 0
  local levels, foreign = {}, {}
  for k = 1, 3 do
    foreign[k] = tonumber(f[5 + k]) or 0
    local level = tonumber(f[k])
    if level == nil or last == nil then
      levels[k] = caps[k]
    else
      levels[k] = math.min(caps[k], level + elapsed * refill_rate(caps[k], foreign[k]))
    end
  end
  return levels, tonumber(f[5]) or 0, foreign
end
-- Writes the levels and lets the hash expire once all of them are full and the pause is over; what
-- the provider taught is kept a while longer (it is what keeps the fleet out of 429s).
local function save(key, caps, levels, now, pause, foreign)
  redis.call('HSET', key, 'r', levels[1], 'i', levels[2], 'o', levels[3], 't', now)
  local ttl_ms = math.max(0, pause - now) / 1000
  for k = 1, 3 do
    ttl_ms = math.max(ttl_ms, (caps[k] - levels[k]) * 1000 / refill_rate(caps[k], foreign[k]))
    if foreign[k] > 0 then ttl_ms = math.max(ttl_ms, 120000) end
  end
  redis.call('PEXPIRE', key, math.ceil(ttl_ms) + 1000)
end
-- The hash's lifetime, named once when it is created, exactly (TIME's own digits).
local function epoch(key)
  local current = redis.call('HGET', key, 'ep')
  if current then return current end
  local t = redis.call('TIME')
  local stamp = t[1] .. '.' .. t[2]
  redis.call('HSET', key, 'ep', stamp)
  return stamp
end
-- Adds to the fleet's own net spend of each bucket; returns the counters.
local function spend(key, amounts)
  local counters = {}
  for k = 1, 3 do
    -- a whole number, and never -0 (which HINCRBY refuses)
    counters[k] = redis.call('HINCRBY', key, NAMES[k] .. 'c', math.floor(amounts[k] + 0.5))
  end
  return counters
end
"""

# KEYS: buckets
# ARGV: requests/min, input tokens/min, output tokens/min, requests, input tokens, output tokens,
#       '1' to take them when they fit ('0' only asks how long until they would)
# Returns {1, 0, epoch, requests, input, output spent so far} when it fits now (and, with '1', took
# all three; the counters include this take), else {0, microseconds to wait} having taken nothing.
# A request larger than a bucket waits until that bucket is full, then overdraws it: it gets
# through, and the debt holds everything else back until it is repaid.
ACQUIRE = (
    _PRELUDE
    + """
local caps = caps_from(ARGV)
local need = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local now = now_us()
local levels, pause, foreign = load(KEYS[1], caps, now)
local wait = math.max(0, pause - now) / 1000000
for k = 1, 3 do
  local fit = math.min(need[k], caps[k])
  if levels[k] < fit then
    wait = math.max(wait, (fit - levels[k]) / refill_rate(caps[k], foreign[k]))
  end
end
if wait > 0 then
  return {0, math.max(1, math.ceil(wait * 1000000))}
end
if ARGV[7] ~= '1' then
  return {1, 0}
end
for k = 1, 3 do
  levels[k] = levels[k] - need[k]
end
save(KEYS[1], caps, levels, now, pause, foreign)
local stamp = epoch(KEYS[1])
local counters = spend(KEYS[1], need)
return {1, 0, stamp, counters[1], counters[2], counters[3]}
"""
)

# KEYS: buckets
# ARGV: requests/min, input tokens/min, output tokens/min, then what to give back to each bucket
#       (negative: take more; a bucket may go below zero and then refills from there)
# Nothing is ever given back above capacity: a bucket that refilled meanwhile is simply full.
ADJUST = (
    _PRELUDE
    + """
local caps = caps_from(ARGV)
local now = now_us()
local levels, pause, foreign = load(KEYS[1], caps, now)
local given = {}
for k = 1, 3 do
  given[k] = tonumber(ARGV[3 + k])
  levels[k] = math.min(caps[k], levels[k] + given[k])
  given[k] = -given[k]
end
save(KEYS[1], caps, levels, now, pause, foreign)
spend(KEYS[1], given)
return 1
"""
)

# KEYS: buckets
# ARGV: seconds
# Keeps the later of the pause already there and the new one; returns the microseconds it now lasts.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = now + tonumber(ARGV[1]) * 1000000
local current = tonumber(redis.call('HGET', KEYS[1], 'pause')) or 0
if wanted > current then
  redis.call('HSET', KEYS[1], 'pause', wanted)
  current = wanted
end
local ttl_ms = math.ceil((current - now) / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ttl_ms then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return math.max(0, math.ceil(current - now))
"""

# KEYS: buckets
# ARGV: requests/min, input tokens/min, output tokens/min; the seconds since the grant whose response
#       carried the readings (when the provider took its snapshot, near enough), the grant's epoch and
#       its three counters; the learning window (seconds); the share of the provider's limit left
#       alone (1 - headroom); then for each bucket the provider's remaining, limit and seconds from
#       the grant until its bucket is full again (remaining -1: the response did not say).
# Each reported bucket is lowered to what the provider has left now (its snapshot, refilled at the
# rate its reset time implies, less what the fleet spent since), less the headroom share of its
# limit, never raised. The fleet so keeps the same margin under the provider's figures as under its
# own: an eager fleet would otherwise hold the account's bucket at zero, and every call of the
# other application (and every reading a little stale) would meet a 429. And the gap between
# two such estimates that the fleet's own spending does not explain is others' spending, learnt as a
# rate (averaged over the window) that slows the bucket's refill. Returns 1.
FOLD = (
    _PRELUDE
    + """
local caps = caps_from(ARGV)
local age, window, spare = tonumber(ARGV[4]), tonumber(ARGV[9]), tonumber(ARGV[10])
local now = now_us()
local levels, pause, foreign = load(KEYS[1], caps, now)
local ep = redis.call('HGET', KEYS[1], 'ep')
local same_epoch = ep and ep == ARGV[5]
for k = 1, 3 do
  local at = 10 + (k - 1) * 3
  local remaining, limit, reset = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  if remaining >= 0 and limit > 0 then
    local b = NAMES[k]
    local f = redis.call('HMGET', KEYS[1], b .. 'c', b .. 'p', b .. 't', b .. 'q')
    local counter = tonumber(f[1]) or 0
    local rate = limit / 60
    if remaining < limit and reset > 0 then rate = (limit - remaining) / reset end
    local since = 0
    if same_epoch then since = math.max(0, counter - tonumber(ARGV[5 + k])) end
    local provider = math.min(limit, remaining + rate * age) - since
    local before, then_us, then_spent = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
    if before and then_us and then_spent then
      local dt = math.max(0, now - then_us) / 1000000
      local unexplained = math.min(limit, before + rate * dt) - (counter - then_spent) - provider
      local w = 1 - math.exp(-dt / window)
      local per_second = dt > 0 and w / dt or 1 / window
      foreign[k] = foreign[k] * (1 - w) + unexplained * per_second
      foreign[k] = math.max(0, math.min(0.9 * caps[k] / 60, foreign[k]))
    end
    redis.call('HSET', KEYS[1], b .. 'p', provider, b .. 't', now, b .. 'q', counter, b .. 'f', foreign[k])
    levels[k] = math.min(levels[k], provider - spare * limit)
  end
end
save(KEYS[1], caps, levels, now, pause, foreign)
return 1
"""
)
