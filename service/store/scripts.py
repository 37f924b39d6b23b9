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
# ARGV: arq payload, queue score, arq payload ttl ms, the record's fields as a JSON object of strings
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
  local u = redis.call('HMGET', usage, 'input_tokens', 'output_tokens', 'reserved')
  local committed = (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0) + (tonumber(u[3]) or 0)
  if committed + reserve > budget then return {-2, budget - committed} end
  redis.call('HINCRBY', usage, 'reserved', reserve)
  fields['budget_period'], fields['budget_reserved'] = ARGV[9], ARGV[8]
end

local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', QUEUE, ARGV[2], fields['job_id'])
redis.call('HINCRBY', QUEUED, fields['plan'], 1)
redis.call('PUBLISH', WAKE, 'submitted')
return {1}
"""
)

# KEYS: job
# ARGV: first stage, first progress, most crash restarts allowed, active jobs allowed per user on
#       the free plan, on the pro plan (0: no cap), lease ms (how long a dead worker's slot is held)
# Returns {state, attempts, crashes[, record]}: 'active' means go on (with the record's fields);
# 'parked' means the user is at their cap
# (the job waits, no attempt spent, and comes back when a slot frees); 'crashed' means too many
# crash restarts; any other state means there is nothing to do.
START = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'started_ms', 'crashes', 'user_id', 'plan')
local state, attempts, crashes = f[1], tonumber(f[2]) or 0, tonumber(f[4]) or 0
if not state then return {'missing', 0, 0} end
if state ~= 'queued' and state ~= 'active' then return {state, attempts, 0} end
local job_id, user, now = job_id_of(KEYS[1]), f[5], now_ms()
local active = '@ACTIVE_PREFIX@' .. user
redis.call('ZREMRANGEBYSCORE', active, '-inf', now)  -- slots of workers that died
if state == 'queued' then
  local cap = tonumber(f[6] == 'pro' and ARGV[5] or ARGV[4])
  if cap > 0 and redis.call('ZCARD', active) >= cap then
    redis.call('ZADD', '@PARKED_PREFIX@' .. user, redis.call('ZSCORE', QUEUE, job_id) or now, job_id)
    return {'parked', attempts, crashes, redis.call('HGETALL', KEYS[1])}
  end
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HINCRBY', QUEUED, f[6], -1)
  redis.call('HINCRBY', RUNNING, f[6], 1)
else
  -- The previous start never reported back: its worker died (crash, kill -9, lost Redis). That
  -- attempt runs again under the same number; crashes are counted apart, so deploys and kills do
  -- not push a job towards failure, while a job that kills every worker is still stopped.
  crashes = redis.call('HINCRBY', KEYS[1], 'crashes', 1)
  if crashes > tonumber(ARGV[3]) then
    return {'crashed', attempts, crashes, redis.call('HGETALL', KEYS[1])}
  end
end
redis.call('ZADD', active, now + tonumber(ARGV[6]), job_id)
redis.call('ZREM', '@PARKED_PREFIX@' .. user, job_id)
if not f[3] then redis.call('HSET', KEYS[1], 'started_ms', now) end
redis.call('HSET', KEYS[1], 'state', 'active', 'stage', ARGV[1], 'progress', ARGV[2])
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
return {'active', attempts, crashes, redis.call('HGETALL', KEYS[1]), f[3] and 0 or 1}
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

# KEYS: job, completed index
# ARGV: result json, input tokens, output tokens, retention seconds, pdf storage key, most completed
#       jobs retained, usage period
# The only place usage grows: guarded by the state, so a report is counted exactly once. Completed
# jobs are capped in number too: past the cap, the oldest records go first.
COMPLETE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'plan')
if f[1] ~= 'active' then return 0 end
local user, now = f[2], now_ms()
redis.call('HINCRBY', RUNNING, f[3], -1)
redis.call('HSET', KEYS[1], 'state', 'completed', 'stage', 'done', 'progress', 100,
  'finished_ms', now, 'result', ARGV[1], 'pdf_key', ARGV[5])
local usage = usage_of(user, ARGV[7])
redis.call('HINCRBY', usage, 'reports', 1)
redis.call('HINCRBY', usage, 'input_tokens', ARGV[2])
redis.call('HINCRBY', usage, 'output_tokens', ARGV[3])
release_budget(KEYS[1], user)
leave_slot(KEYS[1], user)
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
emit(KEYS[1], 'completed', cjson.decode(ARGV[1]))
expire_finished(KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], now, job_id_of(KEYS[1]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 1000 * tonumber(ARGV[4]))
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('DEL', JOB_PREFIX .. old, JOB_PREFIX .. old .. '@EVENTS_SUFFIX@')
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
return 1
"""
)

# KEYS: job
# ARGV: reason, retention seconds
FAIL = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'plan')
if f[1] ~= 'active' then return 0 end
redis.call('HINCRBY', RUNNING, f[3], -1)
local error = cjson.encode({reason = ARGV[1]})
redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_ms', now_ms(), 'error', error)
release_budget(KEYS[1], f[2])
leave_slot(KEYS[1], f[2])
emit(KEYS[1], 'failed', {reason = ARGV[1]})
expire_finished(KEYS[1], ARGV[2])
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
leave_slot(KEYS[1], f[2])
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
return 1
"""
)

# KEYS: job
# ARGV: retention seconds
# Returns the state the job was in. A queued job leaves the queue in the same step, so it can never
# reach the model; an active one is marked cancelled and its worker told to abort (arq's abort set).
CANCEL = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'plan')
local state, user, job_id = f[1], f[2], job_id_of(KEYS[1])
if state ~= 'queued' and state ~= 'active' then return state or 'missing' end
redis.call('HINCRBY', state == 'queued' and QUEUED or RUNNING, f[3], -1)
if state == 'queued' then
  redis.call('ZREM', QUEUE, job_id)
  redis.call('DEL', '@ARQ_JOB_PREFIX@' .. job_id)
  redis.call('ZREM', '@PARKED_PREFIX@' .. user, job_id)
else
  redis.call('ZADD', '@ARQ_ABORT@', now_ms(), job_id)
  redis.call('PUBLISH', WAKE, 'aborted')
  leave_slot(KEYS[1], user)
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', now_ms())
release_budget(KEYS[1], user)
emit(KEYS[1], 'cancelled', {})
expire_finished(KEYS[1], ARGV[1])
return state
"""
)

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
