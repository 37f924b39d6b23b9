"""Lua scripts of a job's life before its end: submitted, found due, started (claimed from the
queue), advanced, put back. Each checks the state it expects before it writes, so a duplicate POST,
two workers racing for one job, a retry racing a cancel, or a crash between two writes can never
leave a half-written job or move a finished one backwards; each state change appends its event to
the job's stream in the same step. The KEYS comment above each script names what its KEYS are;
``service.store.jobs`` builds them.

The queue (``rs:queue``) is a sorted set of '<job id>:<user id>' members scored by when each is due;
the record mirrors its score in 'due_ms' (written in the same step), so a start reads one hash
instead of the queue too. A running job's score is the end of its lease: a job whose worker died
comes due again by itself.
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# A record as a Lua table, and back (for scripts that read it whole and return it).
RECORD_HELPERS = """
local function as_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function as_flat(t)
  local flat = {}
  for name, value in pairs(t) do
    flat[#flat + 1] = name
    flat[#flat + 1] = tostring(value)
  end
  return flat
end
"""

# KEYS: job, queue, the user's listing, queued counts, usage of the period, rate bucket, marker
# ARGV: queue member, queue score, the longest a job is kept (ms: the listing's horizon), job id,
#       created ms, plan, submissions per minute and burst for the user (0: no limit), token budget
#       of the period (0: none), tokens a queued report holds, then the record's fields as name,
#       value pairs (its schedule and its budget hold among them: written as they come)
# Returns {1} when created; {0, fingerprint, report id, state} for an existing job; {-1, ms to wait}
# when the user submits too fast; {-2, tokens left} when the budget cannot hold another report.
# A replay is answered before any limit is looked at: retrying a POST is always safe.
SUBMIT = with_names(
    COMMON
    + """
local existing = redis.call('HMGET', KEYS[1], 'fingerprint', 'report_id', 'state')
if existing[1] then
  return {0, existing[1], existing[2], existing[3]}
end

local per_minute, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
if per_minute > 0 then
  local now = now_ms()
  local b = redis.call('HMGET', KEYS[6], 'tokens', 'ms')
  local refill = (now - (tonumber(b[2]) or now)) * per_minute / 60000
  local tokens = math.min(burst, (tonumber(b[1]) or burst) + refill)
  if tokens < 1 then return {-1, math.ceil((1 - tokens) * 60000 / per_minute)} end
  redis.call('HSET', KEYS[6], 'tokens', tokens - 1, 'ms', now)
  redis.call('PEXPIRE', KEYS[6], math.ceil(burst * 60000 / per_minute) + 1000)
end

local budget, hold = tonumber(ARGV[9]), tonumber(ARGV[10])
if budget > 0 then
  -- Spent, held by calls in flight, and held by queued reports: a new report must fit in the rest.
  local u = redis.call('HMGET', KEYS[5], 'input_tokens', 'output_tokens', 'reserved', 'queued_hold')
  local committed = (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0) + (tonumber(u[3]) or 0)
    + (tonumber(u[4]) or 0)
  if committed + hold > budget then return {-2, budget - committed} end
  redis.call('HINCRBY', KEYS[5], 'queued_hold', hold)
end

redis.call('HSET', KEYS[1], unpack(ARGV, 11))
local job_id, created, keep = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], created, job_id)
if keep > 0 then
  -- Jobs no longer kept leave the listing; one submission in 16 (by its id's first digit) looks.
  if string.sub(job_id, 1, 1) == '0' then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', created - keep)
  end
  redis.call('PEXPIRE', KEYS[3], keep)
end
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
wake_one(KEYS[7])
return {1}
"""
)

# KEYS: queue
# ARGV: most members to return
# The queue's first members by score, due ones first: returns {members due now..., when the first
# one not yet due is due (ms; -1: none)}. One command for a worker's whole look at the queue.
DUE = with_names(
    COMMON
    + """
local now, n = now_ms(), tonumber(ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], '-inf', '+inf', 'BYSCORE', 'LIMIT', 0, n + 1, 'WITHSCORES')
local due, next_ms = {}, -1
for i = 1, #first, 2 do
  if tonumber(first[i + 1]) <= now and #due < n then
    due[#due + 1] = first[i]
  elseif tonumber(first[i + 1]) > now then
    next_ms = tonumber(first[i + 1]) - now
    break
  end
end
due[#due + 1] = next_ms
return due
"""
)

# KEYS: job, events, queue, the user's running jobs, the user's parked jobs, queued counts,
#       running counts
# ARGV: queue member, most crash restarts a job is blamed for, running jobs allowed per user on the
#       free plan, on the pro plan (0: no cap), lease ms, jobs this worker runs besides this one, '1'
#       when this worker runs a suspect alone, ms to wait when deferred, ms to wait when parked
# Claims a due job for this worker: its queue score becomes the end of its lease, so if the worker
# dies the job comes due again by itself. Returns {state, attempts, crashes, record, first start?,
# alone?, restarted?, open call ids}: 'active' means go on; 'taken' means another worker has it (or
# it is not due); 'parked' means the user is at their cap (no attempt spent; it comes back when a
# slot frees); 'deferred' means not on this worker now (a suspect waits for a worker of its own;
# others wait while one runs here); 'crashed' means blamed for too many of its workers' deaths: it
# is claimed so the caller can fail it (code 'worker_crashed'); any other state: nothing to run (the
# job leaves the queue). Open calls are those a dead worker left: the caller closes them as lost.
#
# Which job kills its workers: when a worker dies, every job it ran restarts, but only a job that
# was running ALONE when its worker died is blamed (``crashes``, against the limit). A job that died
# in company is only suspected (``co_crashes``): it next runs alone on a worker, where a death is
# its own. So a job that keeps killing workers fails, and its innocent neighbours do not.
START = with_names(
    COMMON
    + RECORD_HELPERS
    + """
local JOB, EVENTS, QUEUE, ACTIVE, PARKED, QUEUED, RUNNING = unpack(KEYS)
local MEMBER = ARGV[1]
local flat = redis.call('HGETALL', JOB)
local r = as_table(flat)
local state, attempts, crashes = r.state, tonumber(r.attempts) or 0, tonumber(r.crashes) or 0
if state ~= 'queued' and state ~= 'active' then
  redis.call('ZREM', QUEUE, MEMBER)   -- finished or gone: nothing left to run
  return {state or 'missing', attempts, crashes, flat, 0, 0, 0, open_calls(flat)}
end
local now, plan, lease = now_ms(), r.plan, tonumber(ARGV[5])
local due = tonumber(r.due_ms) or 0
if r.parked == '1' then due = tonumber(redis.call('ZSCORE', QUEUE, MEMBER)) or now + 1 end
if due > now then return {'taken', attempts, crashes, {}, 0, 0, 0, {}} end
-- Calls still open when a job starts were left by a worker that no longer runs it: one that died, or
-- one that handed it back (a drain) and could not close its call before it exited. The worker
-- claiming it closes them (as far as they were recorded) before anything runs.
local restarted, lost = state == 'active', open_calls(flat)
if restarted then
  -- Its lease ran out: the worker that had it died (crash, kill -9, lost Redis). That attempt runs
  -- again under its number: kills and deploys do not push a job towards failure.
  redis.call('HINCRBY', RUNNING, plan, -1)
  redis.call('HINCRBY', QUEUED, plan, 1)
  if r.capped == '1' then redis.call('ZREM', ACTIVE, MEMBER) end
  r.state, r.suspect, r.restarted, r.capped = 'queued', '1', '1', '0'
  local co = tonumber(r.co_crashes) or 0
  if r.alone == '1' then crashes = crashes + 1 else co = co + 1 end
  r.crashes, r.co_crashes = crashes, co
  -- Blamed too often, or (when it could never run alone) in company far too often.
  if crashes > tonumber(ARGV[2]) or co > 3 * tonumber(ARGV[2]) + 3 then
    redis.call('HINCRBY', QUEUED, plan, -1)
    redis.call('HINCRBY', RUNNING, plan, 1)
    r.state, r.due_ms = 'active', now + lease
    redis.call('HSET', JOB, unpack(as_flat(r)))
    redis.call('ZADD', QUEUE, now + lease, MEMBER)
    return {'crashed', attempts, crashes, as_flat(r), 0, 0, 1, lost}
  end
end
-- A suspect runs alone, unless it waited long already (then it runs anyway).
local alone = r.suspect == '1' and (tonumber(r.deferrals) or 0) < 30
if (alone and tonumber(ARGV[6]) > 0) or ARGV[7] == '1' then
  if r.suspect == '1' then r.deferrals = (tonumber(r.deferrals) or 0) + 1 end
  r.due_ms = now + tonumber(ARGV[8])
  redis.call('HSET', JOB, unpack(as_flat(r)))
  redis.call('ZADD', QUEUE, r.due_ms, MEMBER)
  return {'deferred', attempts, crashes, {}, 0, 0, restarted and 1 or 0, lost}
end
local cap = tonumber(plan == 'pro' and ARGV[4] or ARGV[3])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', ACTIVE, '-inf', now)  -- slots of workers that died
  if redis.call('ZCARD', ACTIVE) >= cap then
    redis.call('ZADD', PARKED, due, MEMBER)
    r.parked, r.due_ms = '1', now + tonumber(ARGV[9])   -- a safety net: unparked sooner
    redis.call('HSET', JOB, unpack(as_flat(r)))
    redis.call('ZADD', QUEUE, r.due_ms, MEMBER)
    return {'parked', attempts, crashes, as_flat(r), 0, 0, restarted and 1 or 0, lost}
  end
  redis.call('ZADD', ACTIVE, now + lease, MEMBER)
  r.capped = '1'
end
if r.restarted == '1' then
  r.restarted = nil
  redis.call('HDEL', JOB, 'restarted')
else
  attempts = attempts + 1
  r.attempts = attempts
end
redis.call('HINCRBY', QUEUED, plan, -1)
redis.call('HINCRBY', RUNNING, plan, 1)
redis.call('ZADD', QUEUE, now + lease, MEMBER)
if r.parked == '1' then
  redis.call('ZREM', PARKED, MEMBER)
  r.parked = '0'
end
local first = r.started_ms == nil
if first then r.started_ms = now end
-- The first stage starts with the job: no separate step to announce it.
r.state, r.stage, r.progress, r.alone, r.due_ms = 'active', 'fetching', 10, alone and '1' or '0', now + lease
redis.call('HSET', JOB, unpack(as_flat(r)))
progress_event(EVENTS, 10, 'active', 'fetching')
return {'active', attempts, crashes, as_flat(r), first and 1 or 0, alone and 1 or 0, restarted and 1 or 0,
  lost}
"""
)

# KEYS: job, events
# ARGV: stage, progress
# Progress never moves backwards within an attempt; returns 0 when the job is no longer active
# (cancelled meanwhile: the worker stops).
ADVANCE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'progress')
if f[1] ~= 'active' then return 0 end
local progress = math.max(tonumber(f[2]) or 0, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'stage', ARGV[1], 'progress', progress)
progress_event(KEYS[2], progress, 'active', ARGV[1])
return 1
"""
)

# KEYS: job, events, queue, the user's running jobs, the user's parked jobs, queued counts,
#       running counts, marker
# ARGV: queue member, reason, count the attempt ('1' for a failed try, '0' for a job handed back
#       or waiting for capacity), ms until it is due again
# The job goes back to waiting, due again after the wait, and frees its user's slot meanwhile; one
# due at once wakes an idle worker. A job that finished meanwhile (cancelled while it ran) leaves
# the queue instead. Returns 1 when put back.
REQUEUE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'plan', 'progress', 'attempts', 'capped')
if f[1] ~= 'active' then
  if f[1] ~= 'queued' then redis.call('ZREM', KEYS[3], ARGV[1]) end
  return 0
end
redis.call('HINCRBY', KEYS[7], f[2], -1)
redis.call('HINCRBY', KEYS[6], f[2], 1)
local attempts, wait = tonumber(f[4]) or 0, tonumber(ARGV[4])
if ARGV[3] == '0' then attempts = math.max(0, attempts - 1) end
local due = now_ms() + wait
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', 'queued', 'last_error', ARGV[2], 'attempts', attempts,
  'due_ms', due, 'capped', '0')
leave_slot(KEYS[4], KEYS[5], KEYS[3], KEYS[8], ARGV[1], f[5] == '1')
redis.call('ZADD', KEYS[3], due, ARGV[1])
if wait <= 0 then wake_one(KEYS[8]) end
progress_event(KEYS[2], f[3] or 0, 'queued', 'queued')
return 1
"""
)
