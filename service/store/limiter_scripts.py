"""Lua scripts of the shared LLM rate limiter: three token buckets and a pause, per model, in one hash.

One hash per model (``rs:llm:{model}:buckets``) holds the levels of the request, input-token and
output-token buckets (``r``, ``i``, ``o``), the server time they were last brought up to date (``t``,
microseconds) and the provider's pause deadline (``pause``, microseconds). A missing field means a full
bucket, so the hash expires once every bucket is full again and the pause is over: nothing stale stays.

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
-- The levels as of now: refilled continuously at capacity per minute, never above capacity.
local function load(key, caps, now)
  local f = redis.call('HMGET', key, 'r', 'i', 'o', 't', 'pause')
  local last = tonumber(f[4])
  -- a clock stepping backwards (failover to a replica) refills nothing rather than draining
  local elapsed = last and math.max(0, now - last) / 1000000 or 0
  local levels = {}
  for k = 1, 3 do
    local level = tonumber(f[k])
    if level == nil or last == nil then
      levels[k] = caps[k]
    else
      levels[k] = math.min(caps[k], level + elapsed * caps[k] / 60)
    end
  end
  return levels, tonumber(f[5]) or 0
end
-- Writes the levels and lets the hash expire once all of them are full and the pause is over.
local function save(key, caps, levels, now, pause)
  redis.call('HSET', key, 'r', levels[1], 'i', levels[2], 'o', levels[3], 't', now)
  local ttl_ms = math.max(0, pause - now) / 1000
  for k = 1, 3 do
    ttl_ms = math.max(ttl_ms, (caps[k] - levels[k]) * 60000 / caps[k])
  end
  redis.call('PEXPIRE', key, math.ceil(ttl_ms) + 1000)
end
"""

# KEYS: buckets
# ARGV: requests/min, input tokens/min, output tokens/min, requests, input tokens, output tokens,
#       '1' to take them when they fit ('0' only asks how long until they would)
# Returns {1, 0} when it fits now (and, with '1', took all three), else {0, microseconds to wait}
# having taken nothing. A request larger than a bucket waits until that bucket is full, then
# overdraws it: it gets through, and the debt holds everything else back until it is repaid.
ACQUIRE = (
    _PRELUDE
    + """
local caps = caps_from(ARGV)
local need = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local now = now_us()
local levels, pause = load(KEYS[1], caps, now)
local wait = math.max(0, pause - now) / 1000000
for k = 1, 3 do
  local fit = math.min(need[k], caps[k])
  if levels[k] < fit then
    wait = math.max(wait, (fit - levels[k]) * 60 / caps[k])
  end
end
if wait > 0 then
  return {0, math.max(1, math.ceil(wait * 1000000))}
end
if ARGV[7] == '1' then
  for k = 1, 3 do
    levels[k] = levels[k] - need[k]
  end
  save(KEYS[1], caps, levels, now, pause)
end
return {1, 0}
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
local levels, pause = load(KEYS[1], caps, now)
for k = 1, 3 do
  levels[k] = math.min(caps[k], levels[k] + tonumber(ARGV[3 + k]))
end
save(KEYS[1], caps, levels, now, pause)
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
