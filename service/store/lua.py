"""Lua helpers shared by the job scripts: events, per-user slots, budgets, rate buckets.

Keys other than the job's own are derived inside the scripts from the job id and the user id, so
the scripts assume one Redis (or a primary with replicas), not a Redis Cluster. Key names come from
``service.store.names`` through ``@NAME@`` placeholders, filled in by ``with_names``.
"""

from __future__ import annotations

import re

from service.store.names import LUA_NAMES

_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def with_names(source: str) -> str:
    """The script with every ``@NAME@`` replaced by its key name; an unknown name is a bug here."""
    return _PLACEHOLDER.sub(lambda match: LUA_NAMES[match.group(1)], source)


COMMON = """
local QUEUE = '@ARQ_QUEUE@'
local WAKE = '@WAKE_CHANNEL@'
-- How many jobs wait and run, per plan: kept by the scripts that move jobs between those states.
local QUEUED, RUNNING = '@QUEUED_COUNTS@', '@RUNNING_COUNTS@'
local TO_COMPACT = '@TO_COMPACT@'
local JOB_PREFIX = '@JOB_PREFIX@'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function job_id_of(job) return string.sub(job, #JOB_PREFIX + 1) end
local function events_of(job) return job .. '@EVENTS_SUFFIX@' end
local function usage_of(user, period) return '@USAGE_PREFIX@' .. user .. ':' .. period end

-- Append an event to the job's stream, bounded so a chatty job cannot grow it without end.
local function emit(job, name, payload)
  local data = cjson.encode(payload)
  return redis.call('XADD', events_of(job), 'MAXLEN', '~', 1000, '*', 'event', name, 'data', data)
end
local function snapshot(job)
  local f = redis.call('HMGET', job, 'progress', 'state', 'stage')
  return {progress = tonumber(f[1]) or 0, state = f[2], stage = f[3]}
end
-- A finished job keeps its whole stream for a while (readers a little behind, or reconnecting,
-- still get every event), then the sweeper compacts it (see COMPACT) to save memory.
local function expire_finished(job, seconds)
  redis.call('DEL', job .. '@ANSWER_SUFFIX@')
  redis.call('EXPIRE', job, seconds)
  redis.call('EXPIRE', events_of(job), seconds)
  redis.call('ZADD', TO_COMPACT, now_ms(), job_id_of(job))
end

-- A job that stops running frees its user's slot; the user's oldest parked job (one that waited
-- because the user was at their cap) goes back to the queue at its original place, due at once.
local function leave_slot(job, user)
  redis.call('ZREM', '@ACTIVE_PREFIX@' .. user, job_id_of(job))
  local parked = '@PARKED_PREFIX@' .. user
  while true do
    local first = redis.call('ZRANGE', parked, 0, 0, 'WITHSCORES')
    if #first == 0 then return end
    redis.call('ZREM', parked, first[1])
    if redis.call('ZSCORE', QUEUE, first[1]) then
      redis.call('ZADD', QUEUE, math.min(tonumber(first[2]), now_ms()), first[1])
      redis.call('PUBLISH', WAKE, 'unparked')
      return
    end
  end
end

-- The tokens reserved against the user's budget at submit go back (the real usage is added
-- separately when the job completes).
local function release_budget(job, user)
  local f = redis.call('HMGET', job, 'budget_period', 'budget_reserved')
  local reserved = tonumber(f[2]) or 0
  if f[1] and reserved > 0 then
    redis.call('HINCRBY', usage_of(user, f[1]), 'reserved', -reserved)
    redis.call('HSET', job, 'budget_reserved', 0)
  end
end
"""
