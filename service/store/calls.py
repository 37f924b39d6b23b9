"""The call ledger: every paid model call of a job, reserved against the user's budget before it
starts, recorded as it streams, closed once (see ``service.store.call_scripts``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from service.core.clock import now_ms
from service.store import call_scripts, names
from service.store.connection import RedisStore, translate_redis_errors
from service.store.job_types import Checkpoint
from service.store.jobs import call_entries

# The output sample of a model and plan: how many slots it has (each answer replaces a random one),
# and how many must be filled before their 95th percentile stands in for max_tokens near the end of
# a budget (fewer: the worst case).
OUTPUT_SAMPLE_SIZE = 64
OUTPUT_SAMPLE_LEAST = 20
LOST_REASON = "the worker writing it stopped"


@dataclass(frozen=True)
class PaidCall:
    """One call's place in the ledger: whose usage it counts in, and at what price per token."""

    job_id: str
    call_id: str
    usage_key: str  # rs:usage:<user>:<period>
    input_price_nusd: int  # nano-USD per token
    output_price_nusd: int
    sample_key: str = ""  # rs:output-sample:<plan>:<model> (names.output_sample)
    # Input read from and written to the prompt cache, priced apart; None: at the input price.
    cache_read_price_nusd: int | None = None
    cache_write_price_nusd: int | None = None

    def prices(self) -> list[int]:
        """Per token, as RESERVE takes them: input, output, cache read, cache write."""
        read, write = self.cache_read_price_nusd, self.cache_write_price_nusd
        pin = self.input_price_nusd
        return [pin, self.output_price_nusd, pin if read is None else read, pin if write is None else write]


@dataclass(frozen=True)
class Reservation:
    granted: bool
    tokens_left: int = 0  # when refused: what the budget still had for this call
    job_active: bool = True  # False: the job stopped running (cancelled) before its call
    max_tokens: int = 0  # when granted: the call's max_tokens, cut near the end of the budget


class CallLedger(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._reserve = redis.register_script(call_scripts.RESERVE)
        self._record = redis.register_script(call_scripts.RECORD)
        self._close_lost = redis.register_script(call_scripts.CLOSE_LOST)

    @translate_redis_errors
    async def reserve(
        self, call: PaidCall, *, input_tokens: int, worst_case: int, budget: int, model: str, hold_key: str
    ) -> Reservation:
        """Holds ``worst_case`` tokens of the budget for the call, if they fit; ``hold_key`` is the
        usage the job's queue hold was taken from (it becomes part of this reservation)."""
        keys = [names.job(call.job_id), call.usage_key, hold_key, names.job_events(call.job_id)]
        keys.append(call.sample_key)
        pin, pout, pcache_read, pcache_write = call.prices()
        args: list[str | int] = [call.call_id, worst_case, budget, model, pin, pout, input_tokens, now_ms()]
        args += [OUTPUT_SAMPLE_LEAST, pcache_read, pcache_write]
        reply = await self._reserve(keys=keys, args=args)
        if int(reply[0]) == 1:
            return Reservation(True, max_tokens=int(reply[1]))
        if int(reply[0]) == -1:
            return Reservation(False, job_active=False)
        return Reservation(False, tokens_left=max(0, int(reply[1])))

    @translate_redis_errors
    async def record(
        self,
        call: PaidCall,
        input_tokens: int,
        output_tokens: int,
        *,
        request_id: str | None = None,
        outcome: str = "",
        progress: int = -1,
        checkpoint: Checkpoint | None = None,
        text_offset: int = 0,
        text: str = "",
        stage: str = "",
        sample: bool = False,
        reason: str = "",
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> bool:
        """What the call has cost so far; ``input_tokens`` counts every input token billed, the
        cache reads and writes among them (priced at their own rates). With ``outcome`` it is
        closed; with ``checkpoint`` the paid answer is saved in the same step, so an answer is never
        saved without its cost; with ``stage`` that stage is announced; with ``sample`` an answered
        call's output joins its model's sample; ``reason``: why a call that ended unanswered ended
        (a later call's ``restart`` event says it). False when the job is no longer running."""
        keys = [names.job(call.job_id), call.usage_key, names.job_events(call.job_id), call.sample_key]
        saved = orjson.dumps(checkpoint.__dict__).decode() if checkpoint is not None else ""
        args: list[str | int] = [call.call_id, max(0, input_tokens), max(0, output_tokens)]
        args += [request_id or "", outcome, progress, saved, text_offset, text, stage]
        args += [
            OUTPUT_SAMPLE_SIZE if sample else 0,
            reason,
            max(0, cache_read_tokens),
            max(0, cache_write_tokens),
        ]
        return str(await self._record(keys=keys, args=args)) == "active"

    @translate_redis_errors
    async def close_lost(self, job_id: str, record: dict[str, str], call_ids: tuple[str, ...]) -> None:
        """Closes calls a worker that no longer runs the job left open, each as far as its entry
        records when the close runs (``call_scripts.CLOSE_LOST``): one that recorded nothing counts
        its whole input (it was sent, or about to be: the safe side). ``record`` is the claim's read
        of the job; it names only the usage each call counts in (fixed when the call was reserved):
        its counts may be older than the entry's by then (the call's own worker was still at work)."""
        entries = call_entries(record)
        async with self._redis.pipeline(transaction=False) as pipe:
            for call_id in call_ids:
                entry = entries.get(call_id)
                if entry is None or "usage" not in entry:
                    continue
                keys = [names.job(job_id), str(entry["usage"])]
                await self._close_lost(keys=keys, args=[call_id, LOST_REASON], client=pipe)
            await pipe.execute()

    @translate_redis_errors
    async def entries(self, job_id: str) -> dict[str, dict[str, Any]]:
        """The job's ledger, by call id (for operators and tests)."""
        record: dict[str, str] = await self._redis.hgetall(names.job(job_id))  # type: ignore[misc]
        return call_entries(record)


def nano_usd_per_token(usd_per_million: float) -> int:
    """A public price (USD per million tokens) as the ledger's integer nano-USD per token."""
    return math.ceil(usd_per_million * 1000)
