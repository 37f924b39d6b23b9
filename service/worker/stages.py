"""The stages a job goes through, the progress each one stands for, and how they are announced.

Some stages are announced by the store step that begins them, in the same script: START announces
``fetching``, the call's reservation ``summarizing``, the saved answer ``rendering``; the others
here, by ADVANCE. A job that is no longer running (its user cancelled it) is told so by any of
these steps: the worker stops it with ``JobStopped``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog

from service.store.jobs import JobStore
from service.telemetry.tracing import span

log = structlog.get_logger("service.worker.pipeline")

STAGE_PROGRESS = {"fetching": 10, "summarizing": 30, "rendering": 70, "storing": 90, "done": 100}
# Output tokens at which summarising progress is halfway from 30 to 70 (it only approaches 70).
_HALFWAY_TOKENS = 800


class JobStopped(Exception):
    """The job stopped running under its worker (its user cancelled it): nothing left to record."""


def summarizing_progress(output_tokens: int) -> int:
    return 30 + int(40 * output_tokens / (output_tokens + _HALFWAY_TOKENS))


async def announce(jobs: JobStore, job_id: str, name: str) -> None:
    if not await jobs.advance(job_id, stage=name, progress=STAGE_PROGRESS[name]):
        raise JobStopped(f"the job stopped before its {name} stage")


@asynccontextmanager
async def timed(name: str, **fields: Any) -> AsyncIterator[None]:
    """Logs a stage with its duration once it is done; with tracing on, the stage is a span of the
    job's trace."""
    with span(f"stage {name}", {"report_service.stage": name}):
        started = time.perf_counter()
        yield
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        log.info("job_stage", stage=name, duration_ms=duration_ms, **fields)


@asynccontextmanager
async def stage(jobs: JobStore, job_id: str, name: str, **fields: Any) -> AsyncIterator[None]:
    """Announces a stage (state, event), then times it as ``timed`` does."""
    await announce(jobs, job_id, name)
    async with timed(name, **fields):
        yield
