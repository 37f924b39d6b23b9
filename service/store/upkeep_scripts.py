"""Lua scripts of the store's upkeep, run by the workers' periodic jobs: compacting finished jobs'
event streams, and reaping jobs the queue lost."""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# ARGV: finished before this time (ms), most streams to compact in this call
# A finished job's stream, once nobody can still be reading it live, keeps only its ending (the
# final progress and the terminal event) in a freshly built stream: trimming alone would keep the
# old ~4 kB node allocated, for every retained job. Returns how many were compacted.
COMPACT = with_names(
    COMMON
    + """
local done = 0
for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', TO_COMPACT, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local stream = JOB_PREFIX .. job_id .. '@EVENTS_SUFFIX@'
  local ttl = redis.call('PTTL', stream)
  if ttl > 0 then
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 2)
    redis.call('DEL', stream)
    for i = #last, 1, -1 do
      redis.call('XADD', stream, last[i][1], unpack(last[i][2]))
    end
    redis.call('PEXPIRE', stream, ttl)
    done = done + 1
  end
  redis.call('ZREM', TO_COMPACT, job_id)
end
return done
"""
)

# KEYS: live index
# ARGV: now (ms), look at jobs last seen well before this (ms), most to look at, the worker's job
#       function, most times a job may be put back before it fails, failed retention seconds, most
#       failed jobs kept per user
# A job that is neither finished nor in arq's queue (with its payload) has been lost by the queue
# (arq's own timeout, a payload gone with a Redis restart): it is put back, due at once, or after
# too many losses failed with code 'internal'. A running job whose lease on its user's slot has not
# run out may still be running: it is left alone until it does. Returns {looked at, put back, failed}.
REAP = with_names(
    COMMON
    + """
local looked, requeued, failed = 0, 0, 0
local now = tonumber(ARGV[1])
for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  looked = looked + 1
  local job, arq_job = JOB_PREFIX .. job_id, '@ARQ_JOB_PREFIX@' .. job_id
  local f = redis.call('HMGET', job, 'state', 'user_id', 'plan')
  local state, user = f[1], f[2]
  local queued = redis.call('EXISTS', arq_job) == 1 and redis.call('ZSCORE', QUEUE, job_id)
  local lease = tonumber(redis.call('ZSCORE', '@ACTIVE_PREFIX@' .. (user or ''), job_id)) or 0
  if state ~= 'queued' and state ~= 'active' then
    redis.call('ZREM', KEYS[1], job_id)
  elseif queued or (state == 'active' and lease > now) then
    redis.call('ZADD', KEYS[1], now, job_id)
  elseif redis.call('HINCRBY', job, 'reaped', 1) > tonumber(ARGV[5]) then
    local reason = 'the job was lost by the queue too many times; it has been logged'
    fail_job(job, state, user, f[3], reason, 'internal', ARGV[6], ARGV[7])
    failed = failed + 1
  else
    if state == 'active' then
      redis.call('HINCRBY', RUNNING, f[3], -1)
      redis.call('HINCRBY', QUEUED, f[3], 1)
      redis.call('HSET', job, 'state', 'queued', 'stage', 'queued')
      leave_slot(job, user)
      emit(job, 'progress', snapshot(job))
    end
    local payload = '{"t":null,"f":"' .. ARGV[4] .. '","a":["' .. job_id .. '"],"k":{},"et":' .. now .. '}'
    redis.call('SET', arq_job, payload)
    redis.call('ZADD', QUEUE, now, job_id)
    redis.call('ZADD', KEYS[1], now, job_id)
    redis.call('PUBLISH', WAKE, 'reaped')
    requeued = requeued + 1
  end
end
return {looked, requeued, failed}
"""
)
