"""Lua helpers shared by the store's scripts: time, events, per-user slots, budgets, the call
ledger's counting, retention.

No helper builds a key name: every key a script touches arrives in its KEYS, named by the
``KEYS`` comment above the script and built in Python from ``service.store.names`` (what Redis
proxies and Cluster require). Constants (the cancel channel, the replay window) come through
``@NAME@`` placeholders, filled in by ``with_names``.

Every command a script runs is billed by managed Redis and counted by ``INFO commandstats``, so the
helpers read what they need in one command and write in one where they can (``bench/redis_cost.py``
counts them per job).
"""

from __future__ import annotations

import re

from service.store.names import LUA_NAMES

_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def with_names(source: str) -> str:
    """The script with every ``@NAME@`` replaced by its value (an unknown name is a bug here), and
    without the shared helpers it does not use."""
    return without_unused_helpers(_PLACEHOLDER.sub(lambda match: LUA_NAMES[match.group(1)], source))


# Redis runs a script's whole text on every call: each helper it defines is a closure made anew,
# each constant a value built anew, whether the script uses them or not (the shared prelude alone
# cost every script about 4.6 us of Redis CPU). So each script keeps only the top-level helpers and
# constants it names, and the ones those name: definitions without side effects, found by their
# shape (a ``local function`` ending at a line ``end``, or on one line; a one-line constant; a table
# constant ending at a line that ends with ``}``), each with the comment lines above it.
_FUNCTION = re.compile(r"local function (\w+)\(")
_CONSTANT = re.compile(r"local (\w+) = (?:'[^']*'|tonumber\('[^']*'\)|nil|-?\d+)\s*(?:--.*)?$")
_TABLE = re.compile(r"local (\w+) = \{")


def _definitions(lines: list[str]) -> list[tuple[str, int, int]]:
    """(name, first line, line after the last) of each removable top-level definition."""
    found: list[tuple[str, int, int]] = []
    i = 0
    while i < len(lines):
        line, name, end = lines[i], None, i + 1
        if match := _FUNCTION.match(line):
            name = match.group(1)
            if not line.rstrip().endswith(" end"):
                end = lines.index("end", i) + 1
        elif match := _CONSTANT.match(line):
            name = match.group(1)
        elif (match := _TABLE.match(line)) is not None:
            name = match.group(1)
            while not lines[end - 1].rstrip().endswith("}"):
                end += 1
        if name is None:
            i += 1
            continue
        start = i
        while start > 0 and lines[start - 1].startswith("--"):
            start -= 1
        found.append((name, start, end))
        i = end
    return found


def without_unused_helpers(source: str) -> str:
    lines = source.split("\n")
    while True:
        text = "\n".join(lines)
        for name, start, end in _definitions(lines):
            rest = "\n".join(lines[:start] + lines[end:])
            if not re.search(rf"\b{name}\b", rest):
                del lines[start:end]
                break
        else:
            return text


COMMON = """
local CANCELS = '@CANCEL_CHANNEL@'
local WEBHOOKS_WAKE = '@WEBHOOKS_CHANNEL@'
local REPLAY_MS = tonumber('@REPLAY_MS@')
local CALL = '@CALL_FIELD_PREFIX@'

-- Redis's clock, read once per script: every host agrees on it.
local NOW = nil
local function now_ms()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

-- Append an event to a job's stream, bounded so a chatty job cannot grow it without end; returns
-- the entry's id.
local function emit(events, name, payload)
  return redis.call('XADD', events, 'MAXLEN', '~', 1000, '*', 'event', name, 'data', cjson.encode(payload))
end
local function progress_event(events, progress, state, stage)
  return emit(events, 'progress', {progress = tonumber(progress), state = state, stage = stage})
end

-- An idle worker blocks on the marker (BZPOPMIN): setting it wakes exactly one of them, which
-- passes it on when it finds more work than it can take.
local function wake_one(marker)
  redis.call('ZADD', marker, 0, '0')
end

-- A job that stops running frees its user's slot (when the user has a cap: ``capped``); the user's
-- oldest parked job (one that waited because the user was at their cap) becomes due at once, at its
-- original place in the queue.
local function leave_slot(active, parked, queue, marker, member, capped)
  if not capped then return end
  redis.call('ZREM', active, member)
  while true do
    local first = redis.call('ZRANGE', parked, 0, 0, 'WITHSCORES')
    if #first == 0 then return end
    redis.call('ZREM', parked, first[1])
    if redis.call('ZSCORE', queue, first[1]) then
      redis.call('ZADD', queue, math.min(tonumber(first[2]), now_ms()), first[1])
      wake_one(marker)
      return
    end
  end
end

-- The tokens a queued report held against its user's budget since its submission go back (a call
-- takes them over when it is reserved; they go back here when the job ends before its call). The
-- caller clears the record's 'budget_reserved' in the write it makes anyway.
local function release_hold(hold_usage, held)
  if held > 0 then redis.call('HINCRBY', hold_usage, 'queued_hold', -held) end
end

-- The call ledger (service.store.call_scripts) lives in the job's record, one field per call
-- ('call:<id>', a JSON entry). What a call recorded beyond what its usage already counts goes to
-- the usage, priced: one read and one write of the usage hash, however many counters move. The
-- input counts the cache reads and writes too (a budget in tokens does); those are priced at their
-- own rates (an entry from before they were recorded apart has neither: all at the input price).
-- No counter ever goes down, nor the cost: a call may be closed by more than one worker (its own,
-- and one that presumed it lost), each close counting only what is recorded beyond what was
-- counted, so a token is counted once, and a count arriving late never takes back one counted.
local function count_call(usage, e, release)
  local din = math.max(0, e.input - (e.counted_in or 0))
  local dout = math.max(0, e.output - (e.counted_out or 0))
  local dread = math.max(0, (e.cache_read or 0) - (e.counted_cr or 0))
  local dwrite = math.max(0, (e.cache_write or 0) - (e.counted_cw or 0))
  if din == 0 and dout == 0 and dread == 0 and dwrite == 0 and release == 0 then return end
  -- Below 0 only when cached input turns up in input already counted whole (a lost call's estimate,
  -- at the input price, then its worker's count): what was counted stands, the safe side.
  local cost = math.max(0, (din - dread - dwrite) * e.pin + dread * (e.pcr or e.pin)
    + dwrite * (e.pcw or e.pin) + dout * e.pout)
  local u = redis.call('HMGET', usage, 'input_tokens', 'output_tokens', 'cost_nusd', 'reserved',
    'cache_read_tokens', 'cache_write_tokens')
  redis.call('HSET', usage,
    'input_tokens', (tonumber(u[1]) or 0) + din,
    'output_tokens', (tonumber(u[2]) or 0) + dout,
    'cost_nusd', string.format('%.0f', (tonumber(u[3]) or 0) + cost),
    'reserved', math.max(0, (tonumber(u[4]) or 0) - release),
    'cache_read_tokens', (tonumber(u[5]) or 0) + dread,
    'cache_write_tokens', (tonumber(u[6]) or 0) + dwrite)
  e.counted_in, e.counted_out = (e.counted_in or 0) + din, (e.counted_out or 0) + dout
  e.counted_cr, e.counted_cw = (e.counted_cr or 0) + dread, (e.counted_cw or 0) + dwrite
end
-- What a report of the call's counts leaves in its entry: each the most either says. One call's
-- counts only grow while it runs, so the larger is the later; a smaller one is an older report
-- arriving late (a worker that lost the job writing what it saw before), and must not undo a newer.
local function raise_counts(e, input, output, cache_read, cache_write)
  e.input, e.output = math.max(e.input or 0, input), math.max(e.output or 0, output)
  e.cache_read = math.max(e.cache_read or 0, cache_read)
  e.cache_write = math.max(e.cache_write or 0, cache_write)
end
local function is_open(e) return e.outcome == 'reserved' or e.outcome == 'streaming' end
local function close_call(usage, e, outcome)
  count_call(usage, e, e.held)
  e.held, e.outcome = 0, outcome
end
-- The record's call entries still open, from an HGETALL of it: {field, entry, ...}.
local function open_calls(flat)
  local open = {}
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, #CALL) == CALL and is_open(cjson.decode(flat[i + 1])) then
      open[#open + 1] = string.sub(flat[i], #CALL + 1)
    end
  end
  return open
end

-- A finished job's record is rewritten once, with its last fields (``updates``), without what only a
-- job that may still run needs (its schedule, its hold, its saved answer; its input URL, which may
-- carry a signed query), and with its closed calls in short form: when every value is small, Redis
-- keeps a hash as a compact listpack, a third of a hashtable's memory, and only a fresh hash is.
local FINISHED_DROP = {['@ANSWER_FIELD@'] = true, due_ms = true, alone = true, capped = true, parked = true,
  suspect = true, deferrals = true, restarted = true, shown = true, budget_reserved = true,
  budget_period = true, input_url = true}
local function short_call(value)
  if string.sub(value, 1, 1) ~= '{' then return value end
  local e = cjson.decode(value)
  if is_open(e) then return value end   -- its worker still closes it
  return cjson.encode({e.outcome, e.input, e.output, e.request_id})
end
-- A job with a callback URL has its webhook due at its end, in the same step (service.store.webhooks
-- delivers it): no ending can lose it. Workers' delivery loops hear of it at once.
local function webhook_due(fields, webhooks_due, job_id)
  if fields.callback_url and not fields.callback_state then
    redis.call('ZADD', webhooks_due, 'NX', now_ms(), job_id)
    redis.call('PUBLISH', WEBHOOKS_WAKE, job_id)
    fields.callback_state = 'pending'
  end
end
local function rewrite_finished(job, updates, webhooks_due, job_id)
  local flat = redis.call('HGETALL', job)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  for name, value in pairs(updates) do fields[name] = value end
  webhook_due(fields, webhooks_due, job_id)
  local kept = {}
  for name, value in pairs(fields) do
    if not FINISHED_DROP[name] then
      if string.sub(name, 1, #CALL) == CALL then value = short_call(value) end
      kept[#kept + 1] = name
      kept[#kept + 1] = value
    end
  end
  redis.call('DEL', job)
  redis.call('HSET', job, unpack(kept))
end

-- A finished job keeps its stream for REPLAY_MS (readers a little behind, or reconnecting, still
-- get every event); after that its ending is served from the record ('end_id' names the terminal
-- event). The record is kept for the retention of its kind.
local function expire_finished(job, events, seconds)
  redis.call('EXPIRE', job, seconds)
  redis.call('PEXPIRE', events, REPLAY_MS)
end

-- Each user's finished jobs of a kind, by when they expire: one tenant's volume never shortens
-- another's retention. ``keep`` (seconds) is the longest any of them is kept, the index's own
-- lifetime. Returns the ids past the user's cap (the soonest to expire), for the caller to cut down
-- to tombstones (service.store.ending_scripts.EVICT), each with its own keys.
local function retain(index, job_id, seconds, cap, keep)
  local now = now_ms()
  redis.call('ZADD', index, now + 1000 * tonumber(seconds), job_id)
  redis.call('EXPIRE', index, keep)
  local excess = redis.call('ZCARD', index) - tonumber(cap)
  if excess <= 0 then return {} end
  excess = excess - redis.call('ZREMRANGEBYSCORE', index, '-inf', now)   -- gone by their own expiry
  if excess <= 0 then return {} end
  local evicted = redis.call('ZRANGE', index, 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', index, 0, excess - 1)
  return evicted
end
"""
