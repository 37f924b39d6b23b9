"""Lua scripts of the call ledger: every paid model call is reserved against the budget before it
starts, recorded as it streams, and closed once, each step one atomic change in Redis.

A job's ledger is a hash (``rs:job:<id>:calls``) of call id -> JSON entry: the provider's request
id, the input and output tokens recorded so far, the tokens still held against the budget, the
prices, the usage key it is counted in, and how the call ended. Usage grows by the *difference*
between what a record says and what the entry already had, so a record sent twice, or a crash
after any record, never counts a token twice and never loses one that was recorded.
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# KEYS: job, ledger, usage of this period, usage the job's queue hold was taken from
# ARGV: call id, worst case tokens (input + max_tokens), budget of the period (0: none), model,
#       input price, output price (nano-USD per token), the input tokens counted before the call
# Returns {1} when reserved; {0, tokens left} when the worst case does not fit; {-1} when the job
# is not running (cancelled meanwhile): nothing is reserved then.
RESERVE = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'budget_reserved')
if f[1] ~= 'active' then return {-1} end
local hold, worst, budget = tonumber(f[2]) or 0, tonumber(ARGV[2]), tonumber(ARGV[3])
if budget > 0 then
  -- What is spent and what calls in flight hold: queued reports' holds only kept submissions in
  -- check, and give way to a call that is about to be made.
  local u = redis.call('HMGET', KEYS[3], 'input_tokens', 'output_tokens', 'reserved')
  local committed = (tonumber(u[1]) or 0) + (tonumber(u[2]) or 0) + (tonumber(u[3]) or 0)
  if committed + worst > budget then return {0, budget - committed} end
end
-- The job's queue hold is replaced by the call's reservation.
if hold > 0 then
  redis.call('HINCRBY', KEYS[4], 'queued_hold', -hold)
  redis.call('HSET', KEYS[1], 'budget_reserved', 0)
end
redis.call('HINCRBY', KEYS[3], 'reserved', worst)
local entry = {held = worst, input = 0, output = 0, request_id = '', outcome = 'reserved', at = now_ms(),
               model = ARGV[4], pin = tonumber(ARGV[5]), pout = tonumber(ARGV[6]), usage = KEYS[3],
               expect = tonumber(ARGV[7])}
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(entry))
return {1}
"""
)

# KEYS: job, ledger, usage (the entry's), checkpoint
# ARGV: call id, input tokens, output tokens, provider request id ('' if unknown), outcome ('' while
#       the call streams; 'answered', 'failed', 'cancelled', 'not_sent' when it ends), progress
#       (-1: none), checkpoint JSON ('' : none), checkpoint ttl seconds, where the new text of the
#       answer starts (its characters before), the new text ('': none)
# Records what the call has cost so far; with an outcome, closes it (its remaining hold goes back);
# with a checkpoint, saves the paid answer in the same step. Returns 0 for an unknown call.
RECORD = with_names(
    COMMON
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 0 end
local e = cjson.decode(raw)
local input, output = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Counted even when the call was closed already (a cancel closes it while its worker is still
-- streaming): the worker's last record is the truest count of what the provider billed.
count_tokens(KEYS[3], e, input - e.input, output - e.output)
e.input, e.output = input, output
if ARGV[4] ~= '' then e.request_id = ARGV[4] end
if ARGV[5] ~= '' and is_open(e) then
  close_call(e, ARGV[5])
elseif e.outcome == 'reserved' then
  e.outcome = 'streaming'
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(e))
if ARGV[7] ~= '' then redis.call('SET', KEYS[4], ARGV[7], 'EX', ARGV[8]) end
-- The answer as it is written, for pages that show it: an offset of 0 on a later call says the
-- answer starts over.
if ARGV[10] ~= '' and redis.call('HGET', KEYS[1], 'state') == 'active' then
  emit(KEYS[1], 'text', {offset = tonumber(ARGV[9]), delta = ARGV[10]})
end
local progress = tonumber(ARGV[6])
if progress >= 0 then
  local f = redis.call('HMGET', KEYS[1], 'state', 'progress')
  if f[1] == 'active' and progress > (tonumber(f[2]) or 0) then
    redis.call('HSET', KEYS[1], 'stage', 'summarizing', 'progress', progress)
    emit(KEYS[1], 'progress', snapshot(KEYS[1]))
  end
end
return 1
"""
)
