"""One report job, start to finish: fetch, summarise, render, store — resumable from its checkpoint.

Plain async functions over injected dependencies: testable without an arq Worker. The arq glue in
``service.worker.options`` turns ``RetryLater`` into arq's ``Retry``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog

from service.inputs.text import human_size
from service.providers.base import ReportRequest
from service.report.document import ReportDocument
from service.store.job_types import Checkpoint
from service.store.policies import budget_period, retention, start_policy
from service.worker.capacity import call_model
from service.worker.job_metrics import job_finished, job_retried, job_started, model_billed
from service.worker.outcomes import RetryLater, give_up_after_crashes, settle
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker.pipeline")

STAGE_PROGRESS = {"fetching": 10, "summarizing": 30, "rendering": 70, "storing": 90, "done": 100}
# Output tokens at which summarising progress is halfway from 30 to 70 (it only approaches 70).
_HALFWAY_TOKENS = 800


def summarizing_progress(output_tokens: int) -> int:
    return 30 + int(40 * output_tokens / (output_tokens + _HALFWAY_TOKENS))


@asynccontextmanager
async def stage(deps: WorkerDeps, job_id: str, name: str, **fields: Any) -> AsyncIterator[None]:
    """Announces a stage (state, event) and logs it with its duration once it is done."""
    await deps.jobs.advance(job_id, stage=name, progress=STAGE_PROGRESS[name])
    started = time.perf_counter()
    yield
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("job_stage", stage=name, duration_ms=duration_ms, **fields)


async def summarize(deps: WorkerDeps, job_id: str, record: dict[str, str]) -> Checkpoint:
    """Fetches the input and pays for one model call; the answer is saved before anything else."""
    async with stage(deps, job_id, "fetching"):
        fetched = await deps.inputs.load(record["input_url"], record["user_id"])
    last_progress = STAGE_PROGRESS["summarizing"]

    async def on_output(tokens: int) -> None:
        # Already paced by the provider's ProgressThrottle (which always passes the final count);
        # a second throttle here could drop that final count. Unchanged progress is not sent.
        nonlocal last_progress
        progress = summarizing_progress(tokens)
        if progress != last_progress:
            last_progress = progress
            await deps.jobs.advance(job_id, stage="summarizing", progress=progress)

    request = ReportRequest(
        input_text=fetched.text,
        input_name=fetched.name,
        content_type=fetched.content_type,
        model=record["model"],
        max_tokens=deps.settings.max_output_tokens,
    )
    async with stage(deps, job_id, "summarizing", input_bytes=fetched.size):
        answer = await call_model(deps.limiter, deps.provider, request, on_output, deps.metrics)
    checkpoint = Checkpoint(
        text=answer.text,
        model=answer.model,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        offline=answer.offline,
        source=f"{fetched.name} ({human_size(fetched.size)})",
        input_name=fetched.name,
    )
    await deps.jobs.save_checkpoint(job_id, checkpoint, ttl_seconds=deps.settings.failed_retention_seconds)
    if not answer.offline:
        model_billed(deps.metrics, answer.model, answer.input_tokens, answer.output_tokens)
    log.info("llm_answer_saved", model=answer.model, input_tokens=answer.input_tokens,
             output_tokens=answer.output_tokens)  # fmt: skip
    return checkpoint


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
    async with stage(deps, job_id, "rendering"):
        pdf = await deps.renderer.render(document)
    pdf_key = f"reports/{record['report_id']}.pdf"
    async with stage(deps, job_id, "storing", pdf_bytes=len(pdf)):
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
    started = await deps.jobs.start(job_id, start_policy(deps.settings), stage="queued", progress=0)
    if started.state == "crashed":
        return await give_up_after_crashes(deps, started.record, started.crashes)
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
    log.info("job_started", attempt=started.attempts, crash_restarts=started.crashes)
    try:
        async with asyncio.timeout(deps.settings.job_timeout_seconds):
            await produce(deps, job_id, record)
    except BaseException as exc:  # every outcome is recorded in our state machine before arq sees it
        await settle(deps, record, started.attempts, exc)
    done = await deps.jobs.get(job_id) or {}
    return done.get("state", "missing")
