"""Lua scripts that end a job (completed, failed, cancelled) and cut it down past its user's
retention cap: each ending is one atomic step that settles what the job held (its place in the
queue, its user's slot, its budget hold), writes the terminal event, and applies the user's
retention; the ids it pushes past the cap come back for ``EVICT``, one job's keys at a time.
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# The keys every ending takes, in this order, and what they all do last.
ENDING_KEYS = """
local JOB, EVENTS, QUEUE, ACTIVE, PARKED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local QUEUED, RUNNING, HOLD_USAGE, MARKER, INDEX = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local WEBHOOKS_DUE = KEYS[11]
local MEMBER, JOB_ID = ARGV[1], ARGV[2]
-- The record's last fields (``updates``) and its rewrite into the small form a retained job keeps.
local function ended(updates, seconds, cap, keep)
  rewrite_finished(JOB, updates, WEBHOOKS_DUE, JOB_ID)
  expire_finished(JOB, EVENTS, seconds)
  return retain(INDEX, JOB_ID, seconds, cap, keep)
end
"""

# KEYS: job, events, queue, the user's running jobs, the user's parked jobs, queued counts,
#       running counts, usage the job's queue hold was taken from, marker, the user's completed
#       jobs, webhooks due, usage of this period
# ARGV: queue member, job id, result json (for the event), retention seconds, most completed jobs
#       kept per user, pdf storage key, the result as the record keeps it (``views.stored_result``)
# Counts the report (its tokens were counted by the call ledger as they were spent): guarded by the
# state, so a report is counted exactly once. The saved answer goes: the PDF has it now. Returns
# {1, ids past the cap} or {0}.
COMPLETE = with_names(
    COMMON
    + ENDING_KEYS
    + """
local f = redis.call('HMGET', JOB, 'state', 'plan', 'budget_reserved', 'capped')
if f[1] ~= 'active' then return {0} end
redis.call('HINCRBY', RUNNING, f[2], -1)
redis.call('HINCRBY', KEYS[12], 'reports', 1)
release_hold(HOLD_USAGE, tonumber(f[3]) or 0)
leave_slot(ACTIVE, PARKED, QUEUE, MARKER, MEMBER, f[4] == '1')
redis.call('ZREM', QUEUE, MEMBER)
progress_event(EVENTS, 100, 'completed', 'done')
local end_id = emit(EVENTS, 'completed', cjson.decode(ARGV[3]))
local updates = {state = 'completed', stage = 'done', progress = '100', finished_ms = tostring(now_ms()),
  result = ARGV[7], pdf_key = ARGV[6], end_id = end_id}
return {1, ended(updates, ARGV[4], ARGV[5], ARGV[4])}
"""
)

# KEYS: as COMPLETE's first eleven, with the user's failed and cancelled jobs as the index
# ARGV: queue member, job id, reason, error code, retention seconds, most failed and cancelled jobs
#       kept per user
# A running job, or a queued one (a job that can never run, such as one whose record was damaged).
FAIL = with_names(
    COMMON
    + ENDING_KEYS
    + """
local f = redis.call('HMGET', JOB, 'state', 'plan', 'budget_reserved', 'capped')
if f[1] ~= 'active' and f[1] ~= 'queued' then return {0} end
redis.call('HINCRBY', f[1] == 'active' and RUNNING or QUEUED, f[2], -1)
release_hold(HOLD_USAGE, tonumber(f[3]) or 0)
if f[1] == 'active' then leave_slot(ACTIVE, PARKED, QUEUE, MARKER, MEMBER, f[4] == '1') end
redis.call('ZREM', QUEUE, MEMBER)
redis.call('ZREM', PARKED, MEMBER)
local error = {reason = ARGV[3], code = ARGV[4]}
local end_id = emit(EVENTS, 'failed', error)
local updates = {state = 'failed', finished_ms = tostring(now_ms()), error = cjson.encode(error),
  end_id = end_id}
return {1, ended(updates, ARGV[5], ARGV[6], ARGV[5])}
"""
)

# KEYS: as FAIL's
# ARGV: queue member, job id, retention seconds of a job cancelled while it ran, of one cancelled
#       while it waited (it cost nothing: it may go sooner), most failed and cancelled jobs kept
# Returns {state the job was in, ids past the cap}. A queued job leaves the queue in the same
# step, so it can never reach the model; a running one is marked cancelled and its worker told
# (it stays in the queue, due at its lease's end, until its worker lets go: if that worker died, the
# next worker to find it closes the calls it left open).
CANCEL = with_names(
    COMMON
    + ENDING_KEYS
    + """
local f = redis.call('HMGET', JOB, 'state', 'plan', 'budget_reserved', 'capped', 'parked')
local state = f[1]
if state ~= 'queued' and state ~= 'active' then return {state or 'missing'} end
redis.call('HINCRBY', state == 'queued' and QUEUED or RUNNING, f[2], -1)
if state == 'active' then
  leave_slot(ACTIVE, PARKED, QUEUE, MARKER, MEMBER, f[4] == '1')
  redis.call('PUBLISH', CANCELS, JOB_ID)   -- its worker stops it
else
  redis.call('ZREM', QUEUE, MEMBER)
  if f[5] == '1' then redis.call('ZREM', PARKED, MEMBER) end
end
release_hold(HOLD_USAGE, tonumber(f[3]) or 0)
-- The worker's last record still counts what had streamed (see call_scripts.RECORD).
local end_id = emit(EVENTS, 'cancelled', {})
local updates = {state = 'cancelled', finished_ms = tostring(now_ms()), end_id = end_id}
local seconds = state == 'queued' and ARGV[4] or ARGV[3]
return {state, ended(updates, seconds, ARGV[5], math.max(tonumber(ARGV[3]), tonumber(ARGV[4])))}
"""
)

# KEYS: job, events, the user's listing
# ARGV: job id
# A finished job past its user's cap becomes a tombstone: the fields that answer a replayed POST
# as a replay until its retention runs out, and nothing else (no result, events, calls, answer).
EVICT = with_names(
    COMMON
    + """
local names = {'job_id', 'user_id', 'fingerprint', 'report_id', 'state', 'plan', 'created_ms',
  'finished_ms'}
local f = redis.call('HMGET', KEYS[1], unpack(names))
if not f[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
local kept = {'evicted', '1'}
for i, name in ipairs(names) do
  if f[i] then kept[#kept + 1] = name; kept[#kept + 1] = f[i] end
end
redis.call('HSET', KEYS[1], unpack(kept))
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('ZREM', KEYS[3], ARGV[1])   -- out of the user's listing
return 1
"""
)
