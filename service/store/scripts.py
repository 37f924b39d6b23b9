"""Lua scripts: every change of a job's state is one atomic step in Redis.

Each script checks the state it expects before it writes, so a duplicate POST, a stale worker, a
retry racing a cancel, or a crash between two writes can never leave a half-written job, count
usage twice, or move a finished job backwards. Every state change also appends its event to the
job's stream in the same step, so the stream and the record never disagree. KEYS[1] is always the
job's record (``rs:job:<id>``); the helpers in ``service.store.lua`` derive the other keys, and
every name comes from ``service.store.names``.
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# KEYS: job, arq job
# ARGV: arq payload, queue score, the longest a job can be kept (ms: for the user's listing), the
#       record's fields as a JSON object of strings
#       (job_id, user_id and fingerprint among them), submissions per minute and burst for the user
#       (0: no limit), token budget of the period (0: none), tokens to reserve, budget period
# Returns {1} when created; {0, fingerprint, report id, state} for an existing job; {-1, ms to wait}
# when the user submits too fast; {-2, tokens left} when the budget cannot cover another report.
# A replay is answered before any limit is looked at: retrying a POST is always safe.
SUBMIT = with_names(
    COMMON
    + """
local existing = redis.call('HMGET', KEYS[1], 'fingerprint', 'report_id', 'state')
if existing[1] then
  return {0, existing[1], existing[2], existing[3]}
end
local fields = cjson.decode(ARGV[4])
local user = fields['user_id']

local per_minute, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
if per_minute > 0 then
  local bucket, now = '@RATE_PREFIX@' .. user, now_ms()
  local b = redis.call('HMGET', bucket, 'tokens', 'ms')
  local refill = (now - (tonumber(b[2]) or now)) * per_minute / 60000
  local tokens = math.min(burst, (tonumber(b[1]) or burst) + refill)
  if tokens < 1 then return {-1, math.ceil((1 - tokens) * 60000 / per_minute)} end
  redis.call('HSET', bucket, 'tokens', tokens - 1, 'ms', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 60000 / per_minute) + 1000)
end

local budget, reserve = tonumber(ARGV[7]), tonumber(ARGV[8])
if budget > 0 then
  local usage = usage_of(user, ARGV[9])
  -- Spent, held by calls in flight, and held by queued reports: a new report must fit in the rest.
  local u = redis.call('HMGET', usage, 'input_tokens', 'output_tokens', 'reserved', 'queued_hold')
  local committed = (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0) + (tonumber(u[3]) or 0)
    + (tonumber(u[4]) or 0)
  if committed + reserve > budget then return {-2, budget - committed} end
  redis.call('HINCRBY', usage, 'queued_hold', reserve)
  fields['budget_period'], fields['budget_reserved'] = ARGV[9], ARGV[8]
end

local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
-- arq's payload has no expiry: a payload that expired while its job waited would strand the job.
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', QUEUE, ARGV[2], fields['job_id'])
redis.call('ZADD', LIVE, now_ms(), fields['job_id'])
-- The user's listing, newest first; entries older than any job can be kept go as new ones come.
local listing, keep = '@USER_PREFIX@' .. user .. ':jobs', tonumber(ARGV[3])
redis.call('ZADD', listing, fields['created_ms'], fields['job_id'])
if keep > 0 then
  redis.call('ZREMRANGEBYSCORE', listing, '-inf', tonumber(fields['created_ms']) - keep)
  redis.call('PEXPIRE', listing, keep)
end
redis.call('HINCRBY', QUEUED, fields['plan'], 1)
redis.call('PUBLISH', WAKE, 'submitted')
return {1}
"""
)

# KEYS: job
# ARGV: first stage, first progress, most crash restarts allowed, active jobs allowed per user on
#       the free plan, on the pro plan (0: no cap), lease ms (how long a dead worker's slot is held),
#       jobs running on this worker besides this one, '1' when this worker runs a suspect alone,
#       failed retention seconds and most failed jobs kept per user (for a job given up here)
# Returns {state, attempts, crashes, record?, first start?, alone?}: 'active' means go on (with the
# record's fields); 'parked' means the user is at their cap (the job waits, no attempt spent, and
# comes back when a slot frees); 'deferred' means not on this worker now (a suspect waits for a
# worker of its own; others wait while one runs here); 'crashed' means too many crash restarts (the
# job is failed here, code 'worker_crashed'); any other state means there is nothing to do.
#
# Which job kills its workers: when a worker dies, every job it ran restarts, but only a job that
# was running ALONE when its worker died is blamed (``crashes``, against the limit). A job that died
# in company is only suspected (``co_crashes``): it next runs alone on a worker, where a death is
# its own. So a job that keeps killing workers fails, and its innocent neighbours do not.
START = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'started_ms', 'crashes', 'user_id', 'plan',
  'alone', 'suspect', 'co_crashes', 'deferrals', 'restarted')
local state, attempts, crashes = f[1], tonumber(f[2]) or 0, tonumber(f[4]) or 0
if not state then return {'missing', 0, 0} end
if state ~= 'queued' and state ~= 'active' then return {state, attempts, 0} end
local job_id, user, plan, now = job_id_of(KEYS[1]), f[5], f[6], now_ms()
local active = '@ACTIVE_PREFIX@' .. user
local restart = state == 'active'
redis.call('ZREMRANGEBYSCORE', active, '-inf', now)  -- slots of workers that died
if restart then
  -- The previous start never reported back: its worker died (crash, kill -9, lost Redis). That
  -- attempt runs again under the same number: kills and deploys do not push a job towards failure.
  close_open_calls(KEYS[1], 'lost')   -- counted as far as the dead worker recorded it
  redis.call('ZREM', active, job_id)
  redis.call('HINCRBY', RUNNING, plan, -1)
  redis.call('HINCRBY', QUEUED, plan, 1)
  -- 'restarted': the attempt runs again under its number, even if this start is deferred.
  redis.call('HSET', KEYS[1], 'state', 'queued', 'suspect', '1', 'restarted', '1')
  local co = tonumber(f[9]) or 0
  if f[7] == '1' then
    crashes = redis.call('HINCRBY', KEYS[1], 'crashes', 1)
  else
    co = redis.call('HINCRBY', KEYS[1], 'co_crashes', 1)
  end
  -- Blamed too often, or (when it could never run alone) in company far too often.
  if crashes > tonumber(ARGV[3]) or co > 3 * tonumber(ARGV[3]) + 3 then
    local reason = 'the job stopped its worker ' .. (crashes + co) .. ' times (crash or out of memory)'
    fail_job(KEYS[1], 'queued', user, plan, reason .. '; giving up', 'worker_crashed', ARGV[9], ARGV[10])
    return {'crashed', attempts, crashes, redis.call('HGETALL', KEYS[1])}
  end
  f[8], f[11] = '1', '1'
end
local alone = f[8] == '1' and (tonumber(f[10]) or 0) < 30   -- a suspect that waited long runs anyway
if (alone and tonumber(ARGV[7]) > 0) or ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[1], 'deferrals', f[8] == '1' and 1 or 0)
  return {'deferred', attempts, crashes}
end
local cap = tonumber(plan == 'pro' and ARGV[5] or ARGV[4])
if cap > 0 and redis.call('ZCARD', active) >= cap then
  redis.call('ZADD', '@PARKED_PREFIX@' .. user, redis.call('ZSCORE', QUEUE, job_id) or now, job_id)
  return {'parked', attempts, crashes, redis.call('HGETALL', KEYS[1])}
end
if f[11] == '1' then
  redis.call('HDEL', KEYS[1], 'restarted')
else
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
redis.call('HINCRBY', QUEUED, plan, -1)
redis.call('HINCRBY', RUNNING, plan, 1)
redis.call('ZADD', active, now + tonumber(ARGV[6]), job_id)
redis.call('ZREM', '@PARKED_PREFIX@' .. user, job_id)
if not f[3] then redis.call('HSET', KEYS[1], 'started_ms', now) end
redis.call('HSET', KEYS[1], 'state', 'active', 'stage', ARGV[1], 'progress', ARGV[2],
  'alone', alone and '1' or '0')
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
return {'active', attempts, crashes, redis.call('HGETALL', KEYS[1]), f[3] and 0 or 1, alone and 1 or 0}
"""
)

# KEYS: job
# ARGV: stage, progress
# Progress never moves backwards within an attempt; returns 0 when the job is no longer active.
ADVANCE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'progress')
if f[1] ~= 'active' then return 0 end
local progress = math.max(tonumber(f[2]) or 0, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'stage', ARGV[1], 'progress', progress)
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
return 1
"""
)

# KEYS: job
# ARGV: reason, count the attempt ('1' for a failed try, '0' for a job handed back or throttled)
# The job goes back to waiting (arq keeps it in its queue: Retry or cancellation) and frees its
# user's slot while it waits.
REQUEUE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'plan')
if f[1] ~= 'active' then return 0 end
redis.call('HINCRBY', RUNNING, f[3], -1)
redis.call('HINCRBY', QUEUED, f[3], 1)
if ARGV[2] == '0' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', 'queued', 'last_error', ARGV[1])
close_open_calls(KEYS[1], 'abandoned')
leave_slot(KEYS[1], f[2])
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
return 1
"""
)
