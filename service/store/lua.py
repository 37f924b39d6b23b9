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
local LIVE = '@LIVE_INDEX@'

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
  redis.call('EXPIRE', job .. '@CALLS_SUFFIX@', seconds)
  redis.call('ZADD', TO_COMPACT, now_ms(), job_id_of(job))
end

-- A finished job past its user's cap of that kind (completed; or failed and cancelled) becomes a
-- tombstone: the fields that answer a replayed POST as a replay until its retention runs out, and
-- nothing else (no result, events, ledger or answer).
local function tombstone(job)
  local names = {'job_id', 'user_id', 'fingerprint', 'report_id', 'state', 'plan', 'created_ms',
    'finished_ms'}
  local f = redis.call('HMGET', job, unpack(names))
  if not f[1] then return end
  local ttl = redis.call('PTTL', job)
  redis.call('DEL', job, events_of(job), job .. '@CALLS_SUFFIX@', job .. '@ANSWER_SUFFIX@')
  local kept = {'evicted', '1'}
  for i, name in ipairs(names) do
    if f[i] then kept[#kept + 1] = name; kept[#kept + 1] = f[i] end
  end
  redis.call('HSET', job, unpack(kept))
  if ttl > 0 then redis.call('PEXPIRE', job, ttl) end
  redis.call('ZREM', TO_COMPACT, job_id_of(job))
  if f[2] then redis.call('ZREM', '@USER_PREFIX@' .. f[2] .. ':jobs', f[1]) end  -- out of the listing
end
-- Each user's finished jobs of a kind, by when they expire: one tenant's volume never shortens
-- another's retention; past the user's cap, the soonest to expire become tombstones.
local function retain(job, user, kind, seconds, cap)
  local index, now = '@USER_PREFIX@' .. user .. ':' .. kind, now_ms()
  redis.call('ZADD', index, now + 1000 * tonumber(seconds), job_id_of(job))
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)   -- gone by their own expiry
  local excess = redis.call('ZCARD', index) - tonumber(cap)
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', index, 0, excess - 1)) do tombstone(JOB_PREFIX .. old) end
    redis.call('ZREMRANGEBYRANK', index, 0, excess - 1)
  end
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', index, last[2])   -- the index goes with its last member
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

-- The call ledger (service.store.call_scripts): a call's newly recorded tokens, and their cost, go
-- to its usage; its hold against the budget shrinks by what it spent, and goes back when it closes.
local function count_tokens(usage, e, din, dout)
  if din ~= 0 then redis.call('HINCRBY', usage, 'input_tokens', din) end
  if dout ~= 0 then redis.call('HINCRBY', usage, 'output_tokens', dout) end
  local cost = din * e.pin + dout * e.pout
  if cost ~= 0 then redis.call('HINCRBY', usage, 'cost_nusd', string.format('%.0f', cost)) end
  local spent = din + dout
  if spent > 0 and e.held > 0 then
    local release = math.min(e.held, spent)
    e.held = e.held - release
    redis.call('HINCRBY', usage, 'reserved', -release)
  end
end
local function is_open(e) return e.outcome == 'reserved' or e.outcome == 'streaming' end
local function close_call(e, outcome)
  if e.held > 0 then redis.call('HINCRBY', e.usage, 'reserved', -e.held) end
  e.held, e.outcome = 0, outcome
end
-- Calls of the job still open (their worker died, or the job ended around them) are closed with
-- what was recorded of them: that much was counted, and their holds go back. A call whose worker
-- died before it recorded anything is counted its whole input: it was about to be sent, or sent.
local function close_open_calls(job, outcome)
  local ledger = job .. '@CALLS_SUFFIX@'
  local all = redis.call('HGETALL', ledger)
  for i = 1, #all, 2 do
    local e = cjson.decode(all[i + 1])
    if is_open(e) then
      if outcome == 'lost' and e.input == 0 and e.expect then
        count_tokens(e.usage, e, e.expect, 0)
        e.input = e.expect
      end
      close_call(e, outcome)
      redis.call('HSET', ledger, all[i], cjson.encode(e))
    end
  end
end

-- The tokens a queued report held against the user's budget since its submission go back (a call
-- takes them over when it is reserved; they go back here when the job ends before its call).
local function release_budget(job, user)
  local f = redis.call('HMGET', job, 'budget_period', 'budget_reserved')
  local reserved = tonumber(f[2]) or 0
  if f[1] and reserved > 0 then
    redis.call('HINCRBY', usage_of(user, f[1]), 'queued_hold', -reserved)
    redis.call('HSET', job, 'budget_reserved', 0)
  end
end
"""

# Every ending of a job (completed, failed, cancelled) goes through ``finish``; it needs the ledger
# and budget helpers above it, so it comes last.
COMMON += """
local function finish(job, user, kind, outcome, seconds, cap)
  close_open_calls(job, outcome)
  release_budget(job, user)
  redis.call('ZREM', LIVE, job_id_of(job))
  expire_finished(job, seconds)
  retain(job, user, kind, seconds, cap)
end
-- Failing a running or queued job: the error (its reason and code) in the record and the event.
local function fail_job(job, state, user, plan, reason, code, seconds, cap)
  redis.call('HINCRBY', state == 'active' and RUNNING or QUEUED, plan, -1)
  local error = {reason = reason, code = code}
  redis.call('HSET', job, 'state', 'failed', 'finished_ms', now_ms(), 'error', cjson.encode(error))
  if state == 'active' then leave_slot(job, user) end
  emit(job, 'failed', error)
  finish(job, user, 'ended', 'abandoned', seconds, cap)
end
"""
