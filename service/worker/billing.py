"""A paid model call's account: its budget reservation before it starts, its ledger records as it
streams, and its close, whatever ends it.

Records while the answer streams are best effort: a Redis blip must never cut a paid answer short
(the next record, or the close, carries the count). Saving the answer is not: it is retried until
it lands, because a paid answer that is not saved would be paid for again by the next attempt.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import structlog

from service.core.errors import BudgetExhausted, Unavailable
from service.core.retry import backoff_seconds
from service.core.settings import Settings
from service.providers.base import CallUsage, ReportAnswer, ReportRequest, billed_input_tokens
from service.store import names
from service.store.calls import PaidCall, nano_usd_per_token
from service.store.job_types import Checkpoint
from service.store.policies import budget_of, budget_period
from service.telemetry.pricing import Lane, ModelPrices, model_prices
from service.worker.job_metrics import model_billed
from service.worker.resources import WorkerDeps
from service.worker.stages import STAGE_PROGRESS, JobStopped, summarizing_progress

log = structlog.get_logger("service.worker.billing")

SAVE_DEADLINE_SECONDS = 30.0  # how long a paid answer's save is retried while Redis is unreachable
CLOSE_DEADLINE_SECONDS = 5.0  # a failed call's close: past this, the job's end closes it
FREE = ModelPrices(0.0, 0.0, 0.0, 0.0)


@dataclass
class CallAccount:
    deps: WorkerDeps
    call: PaidCall
    model: str
    expected_input: int  # the input tokens counted before the call
    last: CallUsage = field(default_factory=lambda: CallUsage(0, 0))
    closed: bool = False
    text_shown: int = 0  # characters of the answer already in the job's events
    max_tokens: int = 0  # the call's own: max_tokens, or less near the end of the budget
    sampled: bool = True  # its output joins the model's sample (not when max_tokens was cut)

    @classmethod
    async def open(
        cls,
        deps: WorkerDeps,
        record: dict[str, str],
        request: ReportRequest,
        input_tokens: int,
        lane: Lane = "realtime",
    ) -> CallAccount:
        """Reserves the call's worst case (its input plus ``max_tokens``) against the user's budget,
        atomically, or near the end of the budget what is left with ``max_tokens`` cut to fit, when
        that covers the recent 95th percentile of answers (``call_scripts.RESERVE`` states the rule);
        raises ``BudgetExhausted`` when neither fits: the call is never made. ``lane`` sets the prices
        the ledger counts its tokens at (a batch request's are half); a batch request is prepared once
        with its ``max_tokens`` and sent later, so it holds its whole worst case (no sample, no cut)."""
        settings, user = deps.settings, record["user_id"]
        period = budget_period(settings)
        prices = _prices(settings, request.model, lane)
        call = PaidCall(
            job_id=record["job_id"],
            call_id=secrets.token_hex(6),
            usage_key=names.usage(user, period),
            input_price_nusd=nano_usd_per_token(prices.input),
            output_price_nusd=nano_usd_per_token(prices.output),
            sample_key=_sample_key(request.model, record.get("plan", "free"), lane),
            cache_read_price_nusd=nano_usd_per_token(prices.cache_read),
            cache_write_price_nusd=nano_usd_per_token(prices.cache_write),
        )
        worst = input_tokens + request.max_tokens
        reservation = await deps.calls.reserve(
            call,
            input_tokens=input_tokens,
            worst_case=worst,
            budget=budget_of(settings, record.get("plan", "free")),
            model=request.model,
            hold_key=names.usage(user, record.get("budget_period") or period),
        )
        if not reservation.job_active:
            raise JobStopped("the job stopped before its model call")
        if not reservation.granted:
            raise BudgetExhausted(
                f"the token budget of this {settings.budget_period} cannot cover the report: the call "
                f"could cost up to {worst:,} tokens, and even a typical answer needs more than the "
                f"{reservation.tokens_left:,} left"
            )
        cut = reservation.max_tokens < request.max_tokens
        if cut:
            log.info("call_max_tokens_cut", max_tokens=reservation.max_tokens, configured=request.max_tokens)
        # The offline provider's answers teach nothing about a model's: no sample, no command for it.
        sampled = not cut and not settings.offline and lane != "batch"
        return cls(
            deps, call, request.model, input_tokens, max_tokens=reservation.max_tokens, sampled=sampled
        )

    async def listen(self, usage: CallUsage) -> None:
        """The provider's running counts: recorded (with the job's progress) as they come."""
        self.last = usage
        if usage.final:
            return  # the save or the close records the last counts
        try:
            active = await self._record(
                usage, progress=summarizing_progress(usage.output_tokens), text=usage.text
            )
        except Unavailable as exc:
            log.warning("call_record_failed", error=str(exc))
            return
        if not active:
            raise JobStopped("the job was cancelled while its answer was written")

    async def save_answer(self, checkpoint: Checkpoint, answer: ReportAnswer) -> bool:
        """Closes the call as answered and saves the answer with it, in one step, retried; the same
        step announces the rendering stage. False when the job stopped running meanwhile (the call
        is counted all the same; the answer is not kept)."""
        usage = CallUsage(
            answer.input_tokens,
            answer.output_tokens,
            answer.request_id,
            text=checkpoint.text,
            cache_read_tokens=answer.cache_read_tokens,
            cache_write_tokens=answer.cache_write_tokens,
        )
        saved: list[bool] = []

        async def save() -> None:
            saved.append(
                await self._record(
                    usage,
                    outcome="answered",
                    progress=STAGE_PROGRESS["rendering"],
                    checkpoint=checkpoint,
                    text=usage.text,
                    stage="rendering",
                    sample=self.sampled,
                )
            )

        await _retrying(save, SAVE_DEADLINE_SECONDS)
        self._billed(usage)
        return saved[-1]

    async def close(self, outcome: str, *, maybe_billed: bool, reason: str = "") -> None:
        """The call ended without an answer to keep: what it cost as far as we saw is counted. A call
        cut before its first event arrived, if it ``maybe_billed``, counts its whole input.
        ``reason``: why, for the ``restart`` event of the job's next call."""
        if self.closed:
            return
        usage = self.last
        if maybe_billed and billed_input_tokens(usage) == 0:
            usage = CallUsage(self.expected_input, usage.output_tokens, usage.request_id)
        try:
            closing = partial(self._record, usage, outcome=outcome, reason=reason)
            await _retrying(closing, CLOSE_DEADLINE_SECONDS)
        except Unavailable as exc:
            log.warning("call_close_failed", error=str(exc), outcome=outcome)
        self._billed(usage)

    async def _record(
        self,
        usage: CallUsage,
        *,
        outcome: str = "",
        progress: int = -1,
        checkpoint: Checkpoint | None = None,
        text: str = "",
        stage: str = "",
        sample: bool = False,
        reason: str = "",
    ) -> bool:
        shown = min(self.text_shown, len(text))
        active = await self.deps.calls.record(
            self.call,
            billed_input_tokens(usage),  # a budget in tokens counts cached input too
            usage.output_tokens,
            request_id=usage.request_id,
            outcome=outcome,
            progress=progress,
            checkpoint=checkpoint,
            text_offset=shown,
            text=text[shown:],
            stage=stage,
            sample=sample,
            reason=reason,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
        self.text_shown = max(self.text_shown, len(text))
        return active

    def _billed(self, usage: CallUsage) -> None:
        self.closed = True
        if not self.deps.settings.offline:  # the job names its model, but no provider was paid
            model_billed(self.deps.metrics, self.model, usage)


async def _retrying(operation: Callable[[], Awaitable[object]], deadline_seconds: float) -> None:
    give_up_at = time.monotonic() + deadline_seconds
    attempt = 0
    while True:
        try:
            await operation()
            return
        except Unavailable:
            attempt += 1
            wait = backoff_seconds(attempt, base=0.2, cap=3.0)
            if time.monotonic() + wait > give_up_at:
                raise
            await asyncio.sleep(wait)


def _prices(settings: Settings, model: str, lane: Lane) -> ModelPrices:
    """What the ledger counts a call's tokens at: the list prices of the job's model in its lane;
    nothing when the offline provider answers (the job names a priced model, but no provider is
    paid: its tokens are counted, its cost is 0) or for a model the list does not know."""
    if settings.offline:
        return FREE
    return model_prices(model, lane) or FREE


def _sample_key(model: str, plan: str, lane: Lane) -> str:
    """The output sample a call's answer joins and its cut is judged by; none for a batch request
    (prepared with its ``max_tokens`` and sent later: it holds its whole worst case)."""
    return "" if lane == "batch" else names.output_sample(model, plan)
