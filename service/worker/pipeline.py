"""One report job, start to finish: fetch, summarise, render, store — resumable from its checkpoint.

Plain async functions over injected dependencies: the runtime (``service.worker.runtime``) claims a
job and hands its START outcome here; tests can do the same without a running worker. A ``batch``
job's attempt stops after its request is prepared and handed to the batch lane; the attempt that
claims it when its batch has ended finds its answer saved, as any checkpoint
(``service.worker.batch_lane``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from service.core.errors import JobError, ProviderRejected, ProviderUnavailable
from service.inputs.text import human_size
from service.providers.base import billed_input_tokens
from service.report.document import ReportDocument
from service.store.job_types import Checkpoint, StartOutcome
from service.store.jobs import checkpoint_of
from service.store.policies import budget_period, retention
from service.telemetry.pricing import Lane, cost_usd
from service.telemetry.tracing import job_span
from service.worker.batch_lane import answered_lane, hand_off, lane_of
from service.worker.billing import CallAccount
from service.worker.capacity import capacity_for, settle_grant
from service.worker.job_metrics import job_finished, job_started
from service.worker.model_call import call_model_traced
from service.worker.outcomes import give_up_after_crashes, settle
from service.worker.prepare import fetch_request
from service.worker.resources import WorkerDeps
from service.worker.stages import JobStopped, announce, stage, timed

log = structlog.get_logger("service.worker.pipeline")

Record = dict[str, str]


async def summarize(deps: WorkerDeps, record: Record) -> Checkpoint:
    """Fetches the input and pays for one model call: reserved against the budget before it starts,
    counted as it streams, and the answer saved (with its final count) before anything else."""
    fetched, request = await fetch_request(deps, record)
    async with timed("summarizing", input_bytes=fetched.size):  # announced by the reservation
        input_tokens = await deps.provider.count_input_tokens(request)
        # Room in the shared limits first, then the budget: a reserved call is one about to be sent.
        grant = await capacity_for(deps.limiter, request, input_tokens, deps.metrics)
        try:
            account = await CallAccount.open(deps, record, request, input_tokens)
        except BaseException:
            await asyncio.shield(settle_grant(deps.limiter, grant, None))
            raise
        # Near the end of the budget the call runs with fewer max_tokens (what it holds); the
        # shared limits keep what they reserved for the configured max_tokens until it settles.
        request = replace(request, max_tokens=account.max_tokens)
        try:
            answer = await call_model_traced(deps, grant, request, account)
        except BaseException as exc:
            closing = account.close(call_outcome(exc), maybe_billed=maybe_billed(exc), reason=ended_why(exc))
            await asyncio.shield(closing)
            raise
        checkpoint = Checkpoint(
            text=answer.text,
            model=answer.model,
            input_tokens=billed_input_tokens(answer),  # cached input included: it is billed too
            output_tokens=answer.output_tokens,
            offline=answer.offline,
            source=f"{fetched.name} ({human_size(fetched.size)})",
            input_name=fetched.name,
            request_id=answer.request_id,
            cache_read_tokens=answer.cache_read_tokens,
            cache_write_tokens=answer.cache_write_tokens,
            output_limit_reached=answer.output_limit_reached,
        )
        saved = await account.save_answer(
            checkpoint, answer
        )  # first: nothing after this can lose the paid answer
    await settle_grant(deps.limiter, grant, account.last)
    log.info("llm_answer_saved", model=answer.model, input_tokens=answer.input_tokens,
             output_tokens=answer.output_tokens)  # fmt: skip
    if not saved:
        raise JobStopped("the job was cancelled while its answer was written")
    return checkpoint


def call_outcome(exc: BaseException) -> str:
    """How a call that raised ``exc`` ended, as the ledger writes it: 'cut' when its answer had
    begun (the job counts those to bound its free retries, ``outcomes.cut_calls``)."""
    if isinstance(exc, asyncio.CancelledError | JobStopped):
        return "cancelled"
    return "cut" if isinstance(exc, ProviderUnavailable) and exc.mid_answer else "failed"


def ended_why(exc: BaseException) -> str:
    """Why a call ended unanswered, as its job's owner may read it (the next call's ``restart``)."""
    if isinstance(exc, JobError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "the job ran past its deadline"
    return "its call did not finish"


def maybe_billed(exc: BaseException) -> bool:
    """Whether a call cut by ``exc`` before any of its answer arrived may still have been billed its
    input: not when the provider answered with an error status (it bills nothing then), yes when the
    call was cut, timed out or cancelled after it was sent (its input in full, the safe side)."""
    if isinstance(exc, ProviderUnavailable) and exc.mid_answer:
        return True  # after the 200: billed, whatever status its error event names
    return not isinstance(exc, ProviderRejected) and not (
        isinstance(exc, ProviderUnavailable) and exc.status is not None
    )


async def produce(deps: WorkerDeps, record: Record) -> None:
    job_id = record["job_id"]
    checkpoint = checkpoint_of(record)
    if checkpoint is None:
        if await lane_of(deps, record) == "batch":
            await hand_off(deps, record)  # the lane finishes the job's call, then queues it again
            return
        checkpoint = await summarize(deps, record)  # its saved answer announces rendering
    else:
        log.info("checkpoint_resumed", model=checkpoint.model)
        await announce(deps.jobs, job_id, "rendering")
    document = ReportDocument(
        title=f"Executive report: {checkpoint.input_name}",
        created_at=datetime.now(UTC),
        model=checkpoint.model,
        markdown=checkpoint.text,
        source=checkpoint.source,
        offline=checkpoint.offline,
        output_limit_reached=checkpoint.output_limit_reached,
    )
    async with timed("rendering"):
        pdf = await deps.renderer.render(document)
    pdf_key = f"reports/{record['report_id']}.pdf"
    async with stage(deps.jobs, job_id, "storing", pdf_bytes=len(pdf)):
        await deps.storage.put(pdf_key, pdf, "application/pdf")
    result = job_result(checkpoint, answered_lane(record))
    settings = deps.settings
    done = await deps.jobs.complete(
        record, result, pdf_key=pdf_key, retention=retention(settings), period=budget_period(settings)
    )
    if done:
        job_finished(deps.metrics, record, "completed")
        log.info("job_completed", input_tokens=result["inputTokens"], output_tokens=result["outputTokens"])


def job_result(checkpoint: Checkpoint, lane: Lane) -> dict[str, object]:
    """The contract's ``result`` (its ``pdfUrl`` is the API's to add): the answer's tokens as billed,
    the cache's share apart, and what it cost at the list prices of its lane."""
    cache_read, cache_write = checkpoint.cache_read_tokens, checkpoint.cache_write_tokens
    uncached = max(0, checkpoint.input_tokens - cache_read - cache_write)
    cost = cost_usd(checkpoint.model, uncached, checkpoint.output_tokens, cache_read, cache_write, lane)
    return {
        "model": checkpoint.model,
        "inputTokens": checkpoint.input_tokens,
        "outputTokens": checkpoint.output_tokens,
        "tokensUsed": checkpoint.input_tokens + checkpoint.output_tokens,
        "cacheReadTokens": cache_read,
        "cacheWriteTokens": cache_write,
        "costUsd": 0.0 if checkpoint.offline else round(cost, 6),
        "lane": lane,
        "outputLimitReached": checkpoint.output_limit_reached,
    }


async def run_claimed(deps: WorkerDeps, started: StartOutcome) -> None:
    """Runs one claimed attempt of a job to its recorded outcome (START said 'active' or 'crashed')."""
    record = started.record
    structlog.contextvars.bind_contextvars(
        job_id=record.get("job_id"),
        report_id=record.get("report_id"),
        user_id=record.get("user_id"),
        request_id=record.get("request_id"),
    )
    if started.state == "crashed":
        await give_up_after_crashes(deps, record)
        return
    job_started(deps.metrics, record, first_start=started.first)
    log.info("job_started", attempt=started.attempts, crash_restarts=started.crashes, alone=started.alone)
    try:
        with job_span(deps.tracing, record["job_id"], record, started.attempts):
            async with asyncio.timeout(deps.settings.job_timeout_seconds):
                await produce(deps, record)
    except BaseException as exc:  # every outcome is recorded in the job's state machine
        await settle(deps, record, started.attempts, exc)
