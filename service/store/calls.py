"""The call ledger: every paid model call of a job, reserved against the user's budget before it
starts, recorded as it streams, closed once (see ``service.store.call_scripts``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from service.store import call_scripts, names
from service.store.connection import RedisStore, translate_redis_errors
from service.store.job_types import Checkpoint

# Lifetime of a saved answer: a retry after a failed render or store resumes from it.
CHECKPOINT_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class PaidCall:
    """One call's place in the ledger: whose usage it counts in, and at what price per token."""

    job_id: str
    call_id: str
    usage_key: str  # rs:usage:<user>:<period>
    input_price_nusd: int  # nano-USD per token
    output_price_nusd: int


@dataclass(frozen=True)
class Reservation:
    granted: bool
    tokens_left: int = 0  # when refused: what the budget still had for this call


class CallLedger(RedisStore):
    def __init__(self, redis: Redis, *, deadline: float | None = None) -> None:
        super().__init__(redis, deadline=deadline)
        self._reserve = redis.register_script(call_scripts.RESERVE)
        self._record = redis.register_script(call_scripts.RECORD)

    @translate_redis_errors
    async def reserve(
        self, call: PaidCall, *, input_tokens: int, worst_case: int, budget: int, model: str, hold_key: str
    ) -> Reservation:
        """Holds ``worst_case`` tokens of the budget for the call, if they fit; ``hold_key`` is the
        usage the job's queue hold was taken from (it becomes part of this reservation)."""
        keys = [names.job(call.job_id), names.job_calls(call.job_id), call.usage_key, hold_key]
        prices = [call.input_price_nusd, call.output_price_nusd]
        args: list[str | int] = [call.call_id, worst_case, budget, model, *prices, input_tokens]
        reply = await self._reserve(keys=keys, args=args)
        if int(reply[0]) == 1:
            return Reservation(True)
        if int(reply[0]) == -1:
            return Reservation(False, tokens_left=0)
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
        checkpoint_ttl: int = CHECKPOINT_TTL_SECONDS,
        text_offset: int = 0,
        text: str = "",
    ) -> None:
        """What the call has cost so far; with ``outcome`` it is closed; with ``checkpoint`` the
        paid answer is saved in the same step, so an answer is never saved without its cost."""
        keys = [names.job(call.job_id), names.job_calls(call.job_id), call.usage_key]
        keys.append(names.job_answer(call.job_id))
        saved = orjson.dumps(checkpoint.__dict__).decode() if checkpoint is not None else ""
        args: list[str | int] = [call.call_id, max(0, input_tokens), max(0, output_tokens)]
        args += [request_id or "", outcome, progress, saved, checkpoint_ttl, text_offset, text]
        await self._record(keys=keys, args=args)

    @translate_redis_errors
    async def entries(self, job_id: str) -> dict[str, dict[str, object]]:
        """The job's ledger, by call id (for operators and tests)."""
        raw: dict[str, str] = await self._redis.hgetall(names.job_calls(job_id))  # type: ignore[misc]
        return {call_id: orjson.loads(entry) for call_id, entry in raw.items()}


def nano_usd_per_token(usd_per_million: float) -> int:
    """A public price (USD per million tokens) as the ledger's integer nano-USD per token."""
    return math.ceil(usd_per_million * 1000)
