"""One report job, start to finish: fetch, summarise, render, store — resumable from its checkpoint.

Plain async functions over injected dependencies: testable without an arq Worker. The arq glue in
``service.worker.options`` turns ``RetryLater`` into arq's ``Retry``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog

from service.core.errors import PermanentJobError, TransientJobError, Unavailable
from service.core.retry import backoff_seconds
from service.inputs.text import human_size
from service.providers.base import ReportRequest
from service.report.document import ReportDocument
from service.store.job_types import Checkpoint
from service.store.policies import budget_period, retention, start_policy
from service.worker.capacity import DEFAULT_PAUSE_S, CapacityWait, call_model, is_throttle
from service.worker.job_metrics import job_finished, job_retried, job_started, model_billed
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker.pipeline")

STAGE_PROGRESS = {"fetching": 10, "summarizing": 30, "rendering": 70, "storing": 90, "done": 100}
# Output tokens at which summarising progress is halfway from 30 to 70 (it only approaches 70).
_HALFWAY_TOKENS = 800
_PROGRESS_INTERVAL_S = 0.25


class RetryLater(Exception):
    """The job was put back in the queue; run it again after ``defer_seconds``."""

    def __init__(self, defer_seconds: float) -> None:
        super().__init__(f"retry in {defer_seconds:.1f}s")
        self.defer_seconds = defer_seconds


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
    last_sent = 0.0

    async def on_output(tokens: int) -> None:
        nonlocal last_sent
        if time.monotonic() - last_sent >= _PROGRESS_INTERVAL_S:
            last_sent = time.monotonic()
            await deps.jobs.advance(job_id, stage="summarizing", progress=summarizing_progress(tokens))

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
        job_finished(deps.metrics, "completed", record)
        log.info("job_completed", input_tokens=result["inputTokens"], output_tokens=result["outputTokens"])


async def wait_for_capacity(deps: WorkerDeps, job_id: str, seconds: float, reason: str) -> None:
    """The provider is busy (our shared limits, or its own 429/529): back to the queue, no attempt spent."""
    await deps.jobs.requeue(job_id, reason, count_attempt=False)
    job_retried(deps.metrics, "throttled" if "429" in reason or "529" in reason else "capacity")
    defer = seconds + random.uniform(0, 1 + seconds / 10)  # spread the herd that waited together
    log.info("job_waiting_for_capacity", reason=reason, defer_s=round(defer, 2))
    raise RetryLater(defer)


async def retry_or_fail(
    deps: WorkerDeps, job_id: str, attempts: int, error: TransientJobError, kind: str = "transient"
) -> None:
    settings = deps.settings
    if is_throttle(error):
        pause = error.retry_after if error.retry_after is not None else DEFAULT_PAUSE_S
        await wait_for_capacity(deps, job_id, pause, error.reason)
    if attempts >= settings.max_attempts:
        reason = f"{error.reason} (gave up after {attempts} attempts)"
        await fail_job(deps, job_id, reason)
        return
    defer = backoff_seconds(
        attempts,
        base=settings.retry_base_seconds,
        cap=settings.retry_max_seconds,
        retry_after=error.retry_after,
    )
    await deps.jobs.requeue(job_id, error.reason, count_attempt=True)
    job_retried(deps.metrics, kind)
    log.warning("job_retry", reason=error.reason, attempts=attempts, defer_s=round(defer, 2))
    raise RetryLater(defer)


async def hand_back(deps: WorkerDeps, job_id: str) -> None:
    """Cancelled by a shutdown: back to the queue without spending an attempt (a user's cancel
    already marked the job cancelled, and then this changes nothing)."""
    if await deps.jobs.requeue(job_id, "handed back by a stopping worker", count_attempt=False):
        job_retried(deps.metrics, "handed_back")
        log.info("job_handed_back")


async def fail_job(deps: WorkerDeps, job_id: str, reason: str) -> None:
    if await deps.jobs.fail(job_id, reason, retention_seconds=deps.settings.failed_retention_seconds):
        job_finished(deps.metrics, "failed")
        log.warning("job_failed", reason=reason)


async def give_up_after_crashes(deps: WorkerDeps, job_id: str, crashes: int) -> str:
    await fail_job(
        deps, job_id, f"the job stopped its worker {crashes} times (crash or out of memory); giving up"
    )
    return "failed"


async def run_report_job(deps: WorkerDeps, job_id: str) -> str:
    """Runs one attempt of a job; returns the state it left the job in (or raises ``RetryLater``)."""
    started = await deps.jobs.start(job_id, start_policy(deps.settings), stage="queued", progress=0)
    if started.state == "crashed":
        return await give_up_after_crashes(deps, job_id, started.crashes)
    if started.state == "parked":
        # The user is at their cap of running jobs: the job waits, without spending an attempt, and
        # is put back in the queue when one of their jobs ends (this recheck is only a safety net).
        job_started(deps.metrics, started.record, first_start=False)
        job_retried(deps.metrics, "parked")
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
    except PermanentJobError as exc:
        await fail_job(deps, job_id, exc.reason)
    except CapacityWait as wait:
        await wait_for_capacity(deps, job_id, wait.seconds, "waiting for model capacity")
    except TransientJobError as exc:
        await retry_or_fail(deps, job_id, started.attempts, exc)
    except TimeoutError:
        limit = f"the job ran longer than JOB_TIMEOUT_SECONDS ({deps.settings.job_timeout_seconds:g}s)"
        await retry_or_fail(deps, job_id, started.attempts, TransientJobError(limit), kind="timeout")
    except asyncio.CancelledError:
        await asyncio.shield(hand_back(deps, job_id))
        raise
    except Unavailable as exc:
        # Redis is down: nothing can be recorded now. arq keeps the job queued; when it starts again
        # the record still says 'active' and the restart is counted like a crash.
        log.warning("job_store_unavailable", error=str(exc))
        raise RetryLater(backoff_seconds(started.attempts, base=1.0, cap=30.0)) from exc
    except Exception:
        # A bug, not the user's doing: fail clearly instead of leaving the job 'active' forever.
        log.exception("job_crashed")
        await fail_job(deps, job_id, "an internal error stopped the report; it has been logged")
    record = await deps.jobs.get(job_id) or {}
    return record.get("state", "missing")
