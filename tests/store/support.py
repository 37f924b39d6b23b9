"""Store steps as a worker takes them, for tests that drive the store without a worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.store.calls import CallLedger
from service.store.job_types import Retention, StartOutcome, StartPolicy
from service.store.jobs import JobStore, member_of

RETENTION = Retention(seconds=600, count=1000)


def this_period() -> str:
    return datetime.now(UTC).strftime("%Y-%m")  # the usage period the worker would count in


async def record_of(jobs: JobStore, job_id: str) -> dict[str, str]:
    record = await jobs.get(job_id)
    assert record is not None, f"no job {job_id}"
    return record


async def claim(
    jobs: JobStore, job_id: str, policy: StartPolicy, *, ledger: CallLedger | None = None, **options: Any
) -> StartOutcome:
    """START as the runtime sends it; the calls a dead worker left open are closed, as it does."""
    outcome = await jobs.start(member_of(await record_of(jobs, job_id)), policy, **options)
    if outcome.lost_calls and ledger is not None:
        await ledger.close_lost(job_id, outcome.record, outcome.lost_calls)
    return outcome


async def complete(
    jobs: JobStore, job_id: str, result: dict[str, Any], retention: Retention = RETENTION, **options: Any
) -> bool:
    record = await record_of(jobs, job_id)
    period = options.pop("period", this_period())
    pdf_key = options.pop("pdf_key", "reports/x.pdf")
    return await jobs.complete(record, result, pdf_key=pdf_key, retention=retention, period=period)


async def fail(
    jobs: JobStore, job_id: str, reason: str, retention: Retention = RETENTION, code: str = "internal"
) -> bool:
    record = await record_of(jobs, job_id)
    return await jobs.fail(record, reason, code=code, retention=retention, period=this_period())


async def cancel(
    jobs: JobStore, job_id: str, retention: Retention = RETENTION, queued_seconds: int | None = None
) -> str:
    record = await record_of(jobs, job_id)
    queued = retention.seconds if queued_seconds is None else queued_seconds
    return await jobs.cancel(record, retention=retention, queued_seconds=queued, period=this_period())


async def requeue(
    jobs: JobStore, job_id: str, reason: str = "retry", *, count_attempt: bool = True, delay: float = 0
) -> bool:
    record = await record_of(jobs, job_id)
    return await jobs.requeue(record, reason, count_attempt=count_attempt, delay_seconds=delay)
