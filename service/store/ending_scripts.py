"""Lua scripts that end a job: completed, failed or cancelled, each one atomic step that settles
everything the job held (its user's slot, its budget holds, its open calls) and applies its user's
retention (``finish`` in ``service.store.lua``).
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# KEYS: job
# ARGV: result json, retention seconds, pdf storage key, most completed jobs kept per user, period
# Counts the report (its tokens were counted by the call ledger as they were spent): guarded by the
# state, so a report is counted exactly once.
COMPLETE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'plan')
if f[1] ~= 'active' then return 0 end
local user = f[2]
redis.call('HINCRBY', RUNNING, f[3], -1)
redis.call('HSET', KEYS[1], 'state', 'completed', 'stage', 'done', 'progress', 100,
  'finished_ms', now_ms(), 'result', ARGV[1], 'pdf_key', ARGV[3])
redis.call('HINCRBY', usage_of(user, ARGV[5]), 'reports', 1)
leave_slot(KEYS[1], user)
emit(KEYS[1], 'progress', snapshot(KEYS[1]))
emit(KEYS[1], 'completed', cjson.decode(ARGV[1]))
finish(KEYS[1], user, 'completed', 'abandoned', ARGV[2], ARGV[4])
return 1
"""
)

# KEYS: job
# ARGV: reason, error code, retention seconds, most failed and cancelled jobs kept per user
FAIL = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'user_id', 'plan')
if f[1] ~= 'active' then return 0 end
fail_job(KEYS[1], 'active', f[2], f[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: job
# ARGV: retention seconds of a job cancelled while it ran, of one cancelled while it waited (it
#       cost nothing: it may go sooner), most failed and cancelled jobs kept per user
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
emit(KEYS[1], 'cancelled', {})
-- The worker's last record still counts what had streamed (see call_scripts.RECORD).
finish(KEYS[1], user, 'ended', 'cancelled', state == 'queued' and ARGV[2] or ARGV[1], ARGV[3])
return state
"""
)
