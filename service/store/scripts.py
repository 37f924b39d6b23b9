"""Lua scripts: every change of a job's state is one atomic step in Redis.

Each script checks the state it expects before it writes, so a duplicate POST, a stale worker, a
retry racing a cancel, or a crash between two writes can never leave a half-written job, count
usage twice, or move a finished job backwards. Every state change also appends its event to the
job's stream in the same step, so the stream and the record never disagree.
"""

from __future__ import annotations

# Shared helper: append an event to the job's stream, bounded so a chatty job cannot grow it forever.
_EMIT = """
local function emit(stream, name, payload)
  return redis.call('XADD', stream, 'MAXLEN', '~', 1000, '*', 'event', name, 'data', cjson.encode(payload))
end
-- A finished job's stream keeps only its ending (the final progress and the terminal event), in a
-- freshly built stream: trimming alone would keep the old ~4 kB node allocated for every job.
local function compact(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 2)
  redis.call('DEL', stream)
  for i = #last, 1, -1 do
    redis.call('XADD', stream, last[i][1], unpack(last[i][2]))
  end
end
local function snapshot(job)
  local f = redis.call('HMGET', job, 'progress', 'state', 'stage')
  return {progress = tonumber(f[1]) or 0, state = f[2], stage = f[3]}
end
"""

# KEYS: job, arq job, arq queue
# No event here: the hot path stays one small script, and the stream's first reader starts from a
# snapshot of the record anyway.
# ARGV: arq payload, queue score, arq payload ttl ms, the record's fields as a JSON object of strings
# (its job_id and fingerprint among them)
# Returns {1} when created, or {0, fingerprint, report id, state} for an existing job.
SUBMIT = """
local existing = redis.call('HMGET', KEYS[1], 'fingerprint', 'report_id', 'state')
if existing[1] then
  return {0, existing[1], existing[2], existing[3]}
end
local fields = cjson.decode(ARGV[4])
local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], fields['job_id'])
return {1}
"""

# KEYS: job, events
# ARGV: now ms, first stage, first progress, most crash restarts allowed
# Returns {state, attempts, crashes}: state 'active' means go on; any other state means stop.
START = (
    _EMIT
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'started_ms', 'crashes')
local state = f[1]
if not state then return {'missing', 0, 0} end
if state ~= 'queued' and state ~= 'active' then return {state, tonumber(f[2]) or 0, 0} end
local attempts = tonumber(f[2]) or 0
local crashes = tonumber(f[4]) or 0
if state == 'active' then
  -- The previous start never reported back: its worker died (crash, kill -9, lost Redis). That
  -- attempt runs again under the same number; crashes are counted apart, so deploys and kills do
  -- not push a job towards failure, while a job that kills every worker is still stopped.
  crashes = redis.call('HINCRBY', KEYS[1], 'crashes', 1)
  if crashes > tonumber(ARGV[4]) then return {'crashed', attempts, crashes} end
else
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
if not f[3] then redis.call('HSET', KEYS[1], 'started_ms', ARGV[1]) end
redis.call('HSET', KEYS[1], 'state', 'active', 'stage', ARGV[2], 'progress', ARGV[3])
emit(KEYS[2], 'progress', snapshot(KEYS[1]))
return {'active', attempts, crashes}
"""
)

# KEYS: job, events
# ARGV: stage, progress
# Progress never moves backwards within an attempt; returns 0 when the job is no longer active.
ADVANCE = (
    _EMIT
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'progress')
if f[1] ~= 'active' then return 0 end
local progress = math.max(tonumber(f[2]) or 0, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'stage', ARGV[1], 'progress', progress)
emit(KEYS[2], 'progress', snapshot(KEYS[1]))
return 1
"""
)

# KEYS: job, events, checkpoint, usage, completed index
# ARGV: now ms, result json, input tokens, output tokens, retention seconds, pdf storage key,
#       most completed jobs retained, job id
# The only place usage grows: guarded by the state, so a report is counted exactly once.
# Completed jobs are also capped in number: past the cap the oldest records go first (their keys
# are derived here, so this script assumes one Redis, not a cluster).
COMPLETE = (
    _EMIT
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'completed', 'stage', 'done', 'progress', 100,
  'finished_ms', ARGV[1], 'result', ARGV[2], 'pdf_key', ARGV[6])
redis.call('HINCRBY', KEYS[4], 'reports', 1)
redis.call('HINCRBY', KEYS[4], 'input_tokens', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'output_tokens', ARGV[4])
emit(KEYS[2], 'progress', snapshot(KEYS[1]))
emit(KEYS[2], 'completed', cjson.decode(ARGV[2]))
compact(KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[1]) - 1000 * tonumber(ARGV[5]))
local excess = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[7])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[5], 0, excess - 1)) do
    redis.call('DEL', 'rs:job:' .. old, 'rs:job:' .. old .. ':events')
  end
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, excess - 1)
end
return 1
"""
)

# KEYS: job, events, checkpoint
# ARGV: now ms, reason, retention seconds
FAIL = (
    _EMIT
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_ms', ARGV[1],
  'error', cjson.encode({reason = ARGV[2]}))
emit(KEYS[2], 'failed', {reason = ARGV[2]})
compact(KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: job, events
# ARGV: reason, count the attempt ('1' for a failed try, '0' for a job handed back on shutdown)
# The job goes back to waiting; arq keeps it in its queue (Retry or cancellation).
REQUEUE = (
    _EMIT
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
if ARGV[2] == '0' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', 'queued', 'last_error', ARGV[1])
emit(KEYS[2], 'progress', snapshot(KEYS[1]))
return 1
"""
)

# KEYS: job, events, arq job, arq queue, arq abort set, checkpoint
# ARGV: job id, now ms, retention seconds
# Returns the state the job was in. A queued job leaves the queue in the same step, so it can never
# reach the model; an active one is marked cancelled and its worker told to abort.
CANCEL = (
    _EMIT
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'active' then return state or 'missing' end
if state == 'queued' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('DEL', KEYS[3])
else
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_ms', ARGV[2])
emit(KEYS[2], 'cancelled', {})
compact(KEYS[2])
redis.call('DEL', KEYS[6])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return state
"""
)
