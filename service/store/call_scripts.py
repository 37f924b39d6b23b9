"""Lua scripts of the call ledger: every paid model call is reserved against the budget before it
starts, recorded as it streams, and closed once, each step one atomic change in Redis.

A job's ledger lives in its record: a field per call ('call:<id>') holding a JSON entry: the
provider's request id, the input and output tokens recorded so far (the input's cache reads and
writes among them, apart too: they are priced at their own rates), the tokens still held against
the budget, the prices, the usage key it is counted in, and how the call ended. While a call
streams, only its entry changes; when it closes, usage grows by the *difference* between what the
entry says and what was already counted, so a close sent twice, or a crash after any record, never
counts a token twice and never loses one that was recorded.

A call can be closed by more than one worker: its own, and the one that next claims the job while
presuming that worker lost (a lease that ran out under load, a cancel that reached it late), in
either order. So an entry's counts only rise (``raise_counts``), and a lost call is closed with
what its entry says when the close runs (``CLOSE_LOST``), never with a copy read earlier: an older
count written over a newer one would count the difference back out of the usage.
"""

from __future__ import annotations

from service.store.lua import COMMON, with_names

# The 95th percentile of the sampled output counts, at most ``max_out``; ``max_out`` itself while
# fewer than ``least`` answers are known (nothing learnt yet: the worst case).
OUTPUT_P95 = """
local function output_p95(sample, max_out, least)
  local values = redis.call('HVALS', sample)
  if #values < least then return max_out end
  local sorted = {}
  for i, value in ipairs(values) do sorted[i] = tonumber(value) end
  table.sort(sorted)
  return math.max(1, math.min(max_out, sorted[math.ceil(#sorted * 0.95)]))
end
"""

# KEYS: job, usage of this period, usage the job's queue hold was taken from, events, the output
#       sample of the call's model and plan
# ARGV: call id, worst case tokens (input + max_tokens), budget of the period (0: none), model,
#       input price, output price (nano-USD per token), the input tokens counted before the call,
#       now (ms, for the entry), the least samples for a 95th percentile, cache read price, cache
#       write price (nano-USD per token)
# The reservation rule: a call may spend only what it holds, so the usage plus what every open
# call holds never passes the budget, however many calls start at once. It holds its worst case
# when that fits. Near the end of the budget it may hold what is left instead, if that covers its
# input (with a margin: the count is the provider's estimate) and the recent 95th percentile of
# answers' output (``output_p95``), and its max_tokens is cut to fit; else it is refused.
# Returns {1, max_tokens} when reserved (and the job's summarizing stage begins); {0, tokens left}
# when it does not fit; {-1} when the job is not running (cancelled meanwhile): nothing is
# reserved then. When an earlier call of the job had shown text ('shown': '1', or why it ended), a
# 'restart' event says the answer starts over, before any text of this call.
RESERVE = with_names(
    COMMON
    + OUTPUT_P95
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'budget_reserved', 'progress', 'shown')
if f[1] ~= 'active' then return {-1} end
local hold, worst, budget = tonumber(f[2]) or 0, tonumber(ARGV[2]), tonumber(ARGV[3])
local input = tonumber(ARGV[7])
local held, cap = worst, worst - input
if budget > 0 then
  -- What is spent and what calls in flight hold: queued reports' holds only kept submissions in
  -- check, and give way to a call that is about to be made.
  local u = redis.call('HMGET', KEYS[2], 'input_tokens', 'output_tokens', 'reserved')
  local left = budget - (tonumber(u[1]) or 0) - (tonumber(u[2]) or 0) - (tonumber(u[3]) or 0)
  if worst > left then
    local typical = output_p95(KEYS[5], cap, tonumber(ARGV[9]))
    cap = left - input - (math.ceil(input / 50) + 16)
    if typical >= worst - input or cap < typical then return {0, math.max(0, left)} end
    held = left   -- all that is left, and max_tokens cut to fit in it: the call cannot spend more
  end
end
release_hold(KEYS[3], hold)   -- replaced by the call's reservation
redis.call('HINCRBY', KEYS[2], 'reserved', held)
local entry = {held = held, input = 0, output = 0, request_id = '', outcome = 'reserved',
               at = tonumber(ARGV[8]), model = ARGV[4], pin = tonumber(ARGV[5]), pout = tonumber(ARGV[6]),
               pcr = tonumber(ARGV[10]), pcw = tonumber(ARGV[11]), usage = KEYS[2],
               expect = tonumber(ARGV[7])}
local progress = math.max(tonumber(f[3]) or 0, 30)
redis.call('HSET', KEYS[1], CALL .. ARGV[1], cjson.encode(entry), 'budget_reserved', 0,
  'stage', 'summarizing', 'progress', progress, 'shown', 0)
if f[4] and f[4] ~= '0' then   -- '1', or why the call that showed text ended
  emit(KEYS[4], 'restart', {offset = 0, reason = f[4] == '1' and 'its call did not finish' or f[4]})
end
progress_event(KEYS[4], progress, 'active', 'summarizing')
return {1, cap}
"""
)

# KEYS: job, usage (the entry's), events, the output sample of the call's model and plan
# ARGV: call id, input tokens, output tokens, provider request id ('' if unknown), outcome ('' while
#       the call streams; 'answered', 'failed', 'cut', 'cancelled', 'lost', 'not_sent' when it ends),
#       progress (-1: none), checkpoint JSON ('': none), where the new text of the answer starts
#       (its characters before), the new text ('': none), the stage to announce ('': none), how
#       many answers the sample keeps (0: this one is not a sample, its max_tokens was cut), why the
#       call ended ('' while it streams or when answered), of the input tokens those read from and
#       those written to the prompt cache
# Records what the call has cost so far. While it streams, only its entry changes (what the worker
# last recorded is what a crash leaves counted); when it closes (an outcome), what it cost goes to
# the usage and its hold goes back. With a checkpoint, the paid answer is saved in the same step,
# so an answer is never saved without its cost. Returns the job's state ('' when the call is
# unknown): a worker that reads anything but 'active' stops.
RECORD = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], CALL .. ARGV[1], 'state', 'progress', 'shown')
if not f[1] then return '' end
if string.sub(f[1], 1, 1) ~= '{' then return f[2] or '' end   -- closed, in a finished job's short form
local e = cjson.decode(f[1])
-- Counted even when the call was closed already (a cancel closes the job while its worker is still
-- streaming, or the next worker closed it as lost): the worker's last record is the truest count of
-- what the provider billed. It never lowers what another close recorded (see the module's doc).
raise_counts(e, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[13]) or 0, tonumber(ARGV[14]) or 0)
if ARGV[4] ~= '' then e.request_id = ARGV[4] end
if ARGV[5] ~= '' then
  local keep = tonumber(ARGV[11]) or 0
  if is_open(e) and ARGV[5] == 'answered' and keep > 0 then   -- once: a retried save finds it closed
    -- One of ``keep`` slots, chosen by the call's random id: each answer replaces a random older one,
    -- so the sample stays recent and fixed in size for one command per answer.
    redis.call('HSET', KEYS[4], (tonumber(string.sub(ARGV[1], 1, 6), 16) or 0) % keep, e.output)
  end
  if is_open(e) then close_call(KEYS[2], e, ARGV[5]) else count_call(KEYS[2], e, 0) end
elseif e.outcome == 'reserved' then
  e.outcome = 'streaming'
end
local active = f[2] == 'active'
local writes = {CALL .. ARGV[1], cjson.encode(e)}
if ARGV[7] ~= '' and active then
  writes[#writes + 1], writes[#writes + 2] = '@ANSWER_FIELD@', ARGV[7]
end
local progress, stage = tonumber(ARGV[6]), ARGV[10] ~= '' and ARGV[10] or 'summarizing'
local announce = active and (progress > (tonumber(f[3]) or 0) or ARGV[10] ~= '')
if active and ARGV[9] ~= '' then   -- text reaches the events: a later call's RESERVE says 'restart'
  writes[#writes + 1], writes[#writes + 2] = 'shown', 1
elseif f[4] == '1' and (ARGV[12] or '') ~= '' then   -- a call that showed text ended unanswered
  writes[#writes + 1], writes[#writes + 2] = 'shown', ARGV[12]   -- keep why, for the next 'restart'
end
if announce then
  progress = math.max(progress, tonumber(f[3]) or 0)
  writes[#writes + 1], writes[#writes + 2] = 'stage', stage
  writes[#writes + 1], writes[#writes + 2] = 'progress', progress
end
redis.call('HSET', KEYS[1], unpack(writes))
if not active then return f[2] or '' end
-- The answer as it is written, for pages that show it: an offset of 0 on a later call says the
-- answer starts over.
if ARGV[9] ~= '' then
  emit(KEYS[3], 'text', {offset = tonumber(ARGV[8]), delta = ARGV[9]})
end
if announce then progress_event(KEYS[3], progress, 'active', stage) end
return 'active'
"""
)

# KEYS: job, usage (the entry's)
# ARGV: call id, why it ended (for the job's next call's 'restart' event)
# Closes, as 'lost', a call that a worker no longer running the job left open, with what its entry
# records now: its own worker may have recorded more, or closed it, since the claim that found it
# open read the record. A call that recorded no input counts its whole input (it was sent, or about
# to be: the safe side). One closed meanwhile counts only what was recorded beyond what its close
# counted (nothing, unless its worker recorded more after a close that was not its own).
CLOSE_LOST = with_names(
    COMMON
    + """
local f = redis.call('HMGET', KEYS[1], CALL .. ARGV[1], 'shown')
if not f[1] or string.sub(f[1], 1, 1) ~= '{' then return 0 end   -- gone, or closed in short form
local e = cjson.decode(f[1])
local open = is_open(e)
if open then
  if e.input == 0 then e.input = tonumber(e.expect) or 0 end
  close_call(KEYS[2], e, 'lost')
else
  count_call(KEYS[2], e, 0)
end
local writes = {CALL .. ARGV[1], cjson.encode(e)}
if open and f[2] == '1' then   -- it showed text: keep why it ended, for the next 'restart'
  writes[#writes + 1], writes[#writes + 2] = 'shown', ARGV[2]
end
redis.call('HSET', KEYS[1], unpack(writes))
return open and 1 or 0
"""
)
