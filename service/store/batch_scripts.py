"""Lua scripts of the batch lane: a prepared job handed to the lane, the next batch's intent written
before it is created, the batch recorded on its jobs, and each job handed back to the report queue
with its outcome. The KEYS comment above each script names its KEYS; ``service.store.batches``
builds them.

A job's ``batch_state`` says where it is: 'pending' (prepared, waiting for the window), 'sending'
(named in the intent), 'sent' (in a recorded provider batch, ``batch_id``), then its outcome once
the batch ended: 'answered' (its answer saved as the checkpoint), 'failed', 'retry', 'expired',
'canceled'. Only a 'pending' job can be taken into an intent, and only one intent exists at a time,
so a job is in at most one provider batch.
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# KEYS: job, events, queue, the user's running jobs, the user's parked jobs, marker, pending batch
#       jobs, the job's prepared request
# ARGV: queue member, the prepared request, lease ms (how long the lane may hold the job before the
#       queue brings it back by itself), the call id whose reservation the batch request holds, the
#       input's description and name (for the report the answer becomes)
# The job stays 'active' but leaves its worker: its user's slot frees, its queue score becomes the
# lane's far lease, and its stage says it waits in a batch. Returns 0 when the job no longer runs.
HAND_OFF = with_names(
    COMMON
    + """
local JOB, EVENTS, QUEUE, ACTIVE, PARKED, MARKER, PENDING, REQUEST = unpack(KEYS)
local f = redis.call('HMGET', JOB, 'state', 'capped', 'progress')
if f[1] ~= 'active' then return 0 end
local now = now_ms()
local due = now + tonumber(ARGV[3])
leave_slot(ACTIVE, PARKED, QUEUE, MARKER, ARGV[1], f[2] == '1')
redis.call('SET', REQUEST, ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', PENDING, now, ARGV[1])
redis.call('ZADD', QUEUE, due, ARGV[1])
local progress = math.max(tonumber(f[3]) or 0, 30)
redis.call('HSET', JOB, 'batch_state', 'pending', 'batch_call', ARGV[4], 'batch_source', ARGV[5],
  'batch_input', ARGV[6], 'due_ms', due, 'capped', '0', 'stage', 'in_batch', 'progress', progress)
redis.call('HDEL', JOB, 'batch_id', 'batch_error')
progress_event(EVENTS, progress, 'active', 'in_batch')
return 1
"""
)

# KEYS: pending batch jobs
# ARGV: the window (ms), most requests in a batch
# The pending jobs to send now, oldest first: when the oldest has waited the window, or the batch is
# full. Returns {ms until the window of the oldest ends (-1: none pending), members...}.
PENDING_DUE = with_names(
    COMMON
    + """
local n = tonumber(ARGV[2])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return {-1} end
local wait = tonumber(first[2]) + tonumber(ARGV[1]) - now_ms()
if wait > 0 and redis.call('ZCARD', KEYS[1]) < n then return {wait} end
local reply = redis.call('ZRANGE', KEYS[1], 0, n - 1)
table.insert(reply, 1, 0)
return reply
"""
)

# KEYS: pending batch jobs, intent, then each member's job
# ARGV: the intent (JSON: token, written_at), then each member
# Writes the intent for the members still waiting (active, 'pending', 'in_batch'), which leave the pending
# set in the same step; none when an intent exists already (its batch may be on its way). Returns
# {0} then, else {1, members taken, members no longer running (cancelled before they were sent)}.
TAKE = with_names(
    COMMON
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local taken, gone = {}, {}
for i = 3, #KEYS do
  local member = ARGV[i - 1]
  local f = redis.call('HMGET', KEYS[i], 'state', 'batch_state', 'stage')
  -- 'in_batch': handed off and not claimed since (an attempt under way hands it off again).
  if f[1] == 'active' and f[2] == 'pending' and f[3] == 'in_batch' then
    taken[#taken + 1] = member
    redis.call('HSET', KEYS[i], 'batch_state', 'sending')
    redis.call('ZREM', KEYS[1], member)
  elseif f[1] == 'active' or f[1] == 'queued' then
    redis.call('ZREM', KEYS[1], member)   -- brought back by its lease meanwhile: not this lane's now
  else
    gone[#gone + 1] = member   -- its hold goes back first (the caller), then it leaves (FORGET)
  end
end
if #taken > 0 then
  local intent = cjson.decode(ARGV[1])
  intent.members = taken
  redis.call('SET', KEYS[2], cjson.encode(intent))
end
return {1, taken, gone}
"""
)

# KEYS: intent, batches followed, batches known, the batch, then each member's job
# ARGV: the intent's token, batch id, when to look at it first (ms from now), its creation (ms),
#       its members (JSON), how long batches stay known (ms)
# The batch is recorded on its jobs and followed; the intent goes. Returns 0 when the intent is not
# this one (another driver resolved it).
RECORD_BATCH = with_names(
    COMMON
    + """
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw).token ~= ARGV[1] then return 0 end
for i = 5, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'state', 'batch_state')
  if f[1] and f[2] == 'sending' then
    redis.call('HSET', KEYS[i], 'batch_state', f[1] == 'active' and 'sent' or 'sending', 'batch_id', ARGV[2])
  end
end
redis.call('HSET', KEYS[4], 'members', ARGV[5], 'polls', 0, 'created_ms', ARGV[4])
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[6]))
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[3]), ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[6]))
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: intent, pending batch jobs, then each member's job
# ARGV: the intent's token, then each member
# No batch holds the intent's requests, and none can appear: its jobs wait again (the next intent
# takes those still running). Returns 0 when the intent is not this one.
RESET_INTENT = with_names(
    COMMON
    + """
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw).token ~= ARGV[1] then return 0 end
for i = 3, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'state', 'batch_state')
  if f[2] == 'sending' then
    redis.call('HSET', KEYS[i], 'batch_state', 'pending')
    redis.call('ZADD', KEYS[2], now_ms(), ARGV[i - 1])
  end
end
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: batches followed, the batch
# ARGV: batch id, ms until it is looked at again
# Returns how often it had been looked at before.
RESCHEDULE = with_names(
    COMMON
    + """
redis.call('ZADD', KEYS[1], 'XX', now_ms() + tonumber(ARGV[2]), ARGV[1])
return redis.call('HINCRBY', KEYS[2], 'polls', 1) - 1
"""
)

# KEYS: job, events, queue, queued counts, running counts, marker
# ARGV: queue member, batch id, outcome ('answered', 'failed', 'retry', 'expired', 'canceled'), the
#       error (JSON: reason, code; '' for none)
# A job whose batch ended goes back to the report queue, due at once, with its outcome in its record:
# the worker that claims it renders the saved answer, fails, retries or runs it in the realtime lane
# (``service.worker.batch_lane``). Only a job still 'sent' in this batch moves: done twice (a driver
# that died midway through a batch's results), it moves once. Returns 1 when it moved.
RETURN = with_names(
    COMMON
    + """
local JOB, EVENTS, QUEUE, QUEUED, RUNNING, MARKER = unpack(KEYS)
local f = redis.call('HMGET', JOB, 'state', 'plan', 'progress', 'attempts', 'batch_state', 'batch_id')
if f[1] ~= 'active' or f[5] ~= 'sent' or f[6] ~= ARGV[2] then return 0 end
redis.call('HINCRBY', RUNNING, f[2], -1)
redis.call('HINCRBY', QUEUED, f[2], 1)
-- Not an attempt: the claim that follows counts it again.
local attempts, due = math.max(0, (tonumber(f[4]) or 0) - 1), now_ms()
redis.call('HSET', JOB, 'state', 'queued', 'stage', 'queued', 'attempts', attempts, 'due_ms', due,
  'batch_state', ARGV[3], 'batch_error', ARGV[4])
redis.call('ZADD', QUEUE, due, ARGV[1])
wake_one(MARKER)
progress_event(EVENTS, f[3] or 0, 'queued', 'queued')
return 1
"""
)

# KEYS: job, pending batch jobs, queue
# ARGV: queue member
# A job that ended while the lane held it (cancelled) leaves the lane's sets and the queue (the
# queue would otherwise keep it until the lane's far lease). Returns 1 when it left.
FORGET = with_names(
    COMMON
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'active' or state == 'queued' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)

# KEYS: the driver's lease
# ARGV: this driver's token, lease ms
# Takes the lease, or keeps it when this driver holds it. Returns 1 when held.
LEASE = with_names(
    COMMON
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
)
