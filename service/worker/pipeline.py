"""One report job, start to finish: fetch, summarise, render, store — resumable from its checkpoint.

Plain async functions over injected dependencies: testable without an arq Worker. The arq glue in
``service.worker.options`` turns ``RetryLater`` into arq's ``Retry``.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import structlog

from service.core.errors import ProviderRejected, ProviderUnavailable
from service.inputs.text import human_size
from service.providers.base import ReportRequest
from service.report.document import ReportDocument
from service.store.job_types import Checkpoint, StartOutcome
from service.store.policies import budget_period, retention, start_policy
from service.worker.billing import CallAccount
from service.worker.capacity import call_model, capacity_for, settle_grant
from service.worker.job_metrics import job_finished, job_retried, job_started
from service.worker.outcomes import RetryLater, given_up_after_crashes, settle
from service.worker.resources import WorkerDeps
from service.worker.stages import stage
from service.worker.webhooks import schedule_webhook

log = structlog.get_logger("service.worker.pipeline")


async def summarize(deps: WorkerDeps, job_id: str, record: dict[str, str]) -> Checkpoint:
    """Fetches the input and pays for one model call: reserved against the budget before it starts,
    counted as it streams, and the answer saved (with its final count) before anything else."""
    async with stage(deps.jobs, job_id, "fetching"):
        fetched = await deps.inputs.load(record["input_url"], record["user_id"])
    request = ReportRequest(
        input_text=fetched.text,
        input_name=fetched.name,
        content_type=fetched.content_type,
        model=record["model"],
        max_tokens=deps.settings.max_output_tokens,
    )
    async with stage(deps.jobs, job_id, "summarizing", input_bytes=fetched.size):
        input_tokens = await deps.provider.count_input_tokens(request)
        # Room in the shared limits first, then the budget: a reserved call is one about to be sent.
        grant = await capacity_for(deps.limiter, request, input_tokens, deps.metrics)
        try:
            account = await CallAccount.open(deps, record, request, input_tokens)
        except BaseException:
            await asyncio.shield(settle_grant(deps.limiter, grant, None))
            raise
        try:
            answer = await call_model(deps.limiter, grant, deps.provider, request, account, deps.metrics)
        except BaseException as exc:
            await asyncio.shield(account.close(call_outcome(exc), maybe_billed=maybe_billed(exc)))
            raise
        checkpoint = Checkpoint(
            text=answer.text,
            model=answer.model,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            offline=answer.offline,
            source=f"{fetched.name} ({human_size(fetched.size)})",
            input_name=fetched.name,
            request_id=answer.request_id,
        )
        await account.save_answer(checkpoint)  # first: nothing after this can lose the paid answer
    await settle_grant(deps.limiter, grant, account.last)
    log.info("llm_answer_saved", model=answer.model, input_tokens=answer.input_tokens,
             output_tokens=answer.output_tokens)  # fmt: skip
    return checkpoint


def call_outcome(exc: BaseException) -> str:
    """How a call that raised ``exc`` ended, as the ledger writes it."""
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"


def maybe_billed(exc: BaseException) -> bool:
    """Whether a call cut by ``exc`` before any of its answer arrived may still have been billed its
    input: not when the provider answered with an error status (it bills nothing then), yes when the
    call was cut, timed out or cancelled after it was sent (its input in full, the safe side)."""
    return not isinstance(exc, ProviderRejected) and not (
        isinstance(exc, ProviderUnavailable) and exc.status is not None
    )


async def produce(deps: WorkerDeps, job_id: str, record: dict[str, str]) -> None:
    checkpoint = await deps.jobs.load_checkpoint(job_id)
    if checkpoint is None:
        checkpoint = await summarize(deps, job_id, record)
    else:
        log.info("checkpoint_resumed", model=checkpoint.model)
    document = ReportDocument(
        title=f"Executive report: {checkpoint.input_name}",
        created_at=datetime.now(UTC),
        model=checkpoint.model,
        markdown=checkpoint.text,
        source=checkpoint.source,
        offline=checkpoint.offline,
    )
    async with stage(deps.jobs, job_id, "rendering"):
        pdf = await deps.renderer.render(document)
    pdf_key = f"reports/{record['report_id']}.pdf"
    async with stage(deps.jobs, job_id, "storing", pdf_bytes=len(pdf)):
        await deps.storage.put(pdf_key, pdf, "application/pdf")
    result = {
        "model": checkpoint.model,
        "inputTokens": checkpoint.input_tokens,
        "outputTokens": checkpoint.output_tokens,
        "tokensUsed": checkpoint.input_tokens + checkpoint.output_tokens,
    }
    done = await deps.jobs.complete(
        job_id,
        result,
        pdf_key=pdf_key,
        retention=retention(deps.settings),
        period=budget_period(deps.settings),
    )
    if done:
        job_finished(deps.metrics, record, "completed")
        log.info("job_completed", input_tokens=result["inputTokens"], output_tokens=result["outputTokens"])


async def run_report_job(deps: WorkerDeps, job_id: str) -> str:
    """Runs one attempt of a job; returns the state it left the job in (or raises ``RetryLater``)."""
    async with deps.running.starting() as (others, suspect_here):
        started = await deps.jobs.start(
            job_id, start_policy(deps.settings), stage="queued", progress=0,
            others_here=others, suspect_here=suspect_here,
        )  # fmt: skip
        if started.proceed:
            deps.running.began(job_id, alone=started.alone)
    try:
        return await _run_started(deps, job_id, started)
    finally:
        deps.running.ended(job_id)


async def _run_started(deps: WorkerDeps, job_id: str, started: StartOutcome) -> str:
    if started.state == "deferred":
        # A suspect waits for a worker of its own, or others wait while one runs alone here.
        defer = random.uniform(1.0, 3.0)
        log.info("job_deferred", defer_s=round(defer, 2))
        raise RetryLater(defer)
    if started.state == "crashed":
        state = given_up_after_crashes(deps, started.record)
        await schedule_webhook(deps.webhooks, job_id, started.record, state)
        return state
    if started.state == "parked":
        # The user is at their cap of running jobs: the job waits, without spending an attempt, and
        # is put back in the queue when one of their jobs ends (this recheck is only a safety net).
        job_started(deps.metrics, started.record, first_start=False)
        job_retried(deps.metrics, started.record, "parked")
        log.info("job_parked")
        raise RetryLater(deps.settings.park_recheck_seconds)
    if not started.proceed:
        log.info("job_skipped", state=started.state)
        return started.state
    record = started.record
    job_started(deps.metrics, record, first_start=started.first)
    structlog.contextvars.bind_contextvars(report_id=record.get("report_id"), user_id=record.get("user_id"))
    log.info("job_started", attempt=started.attempts, crash_restarts=started.crashes, alone=started.alone)
    try:
        async with asyncio.timeout(deps.settings.job_timeout_seconds):
            await produce(deps, job_id, record)
    except BaseException as exc:  # every outcome is recorded in our state machine before arq sees it
        await settle(deps, record, started.attempts, exc)
    done = await deps.jobs.get(job_id) or {}
    await schedule_webhook(deps.webhooks, job_id, done, done.get("state", "missing"))
    return done.get("state", "missing")
