"""What an ended batch comes to, job by job: each request's call closed in its job's ledger (an answer
counted once, at batch prices, and saved as the job's checkpoint in the same step), then the job
put back in the report queue with its outcome for a worker to finish (``service.worker.batch_lane``).

Every step is safe to repeat: a driver that dies midway through a batch's results is followed by
one that reads them again, and the ledger counts only what it had not counted, the queue moves only
jobs still waiting in this batch.
"""

from __future__ import annotations

from typing import Any

import structlog

from service.core.errors import PermanentJobError
from service.providers.base import CallUsage, ReportAnswer, billed_input_tokens
from service.providers.batch import Answered, BatchOutcome, Canceled, Expired, Failed
from service.store import names
from service.store.calls import PaidCall
from service.store.job_types import Checkpoint
from service.store.jobs import call_entries
from service.worker.job_metrics import model_billed
from service.worker.resources import WorkerDeps

log = structlog.get_logger("service.worker.batch_results")


def batch_call(record: dict[str, str]) -> PaidCall | None:
    """The ledger entry the job's batch request holds its reservation in."""
    call_id = record.get("batch_call", "")
    entry = call_entries(record).get(call_id)
    if entry is None or "usage" not in entry:
        return None
    pin, pout = int(entry["pin"]), int(entry["pout"])
    read, write = int(entry.get("pcr", pin)), int(entry.get("pcw", pin))
    return PaidCall(
        record["job_id"], call_id, str(entry["usage"]), pin, pout,
        cache_read_price_nusd=read, cache_write_price_nusd=write,
    )  # fmt: skip


async def close_unsent(deps: WorkerDeps, member: str) -> None:
    """A job that ended (cancelled) before its request was sent: its hold goes back, and it leaves
    the lane and the report queue."""
    assert deps.batch_store is not None
    record = await deps.jobs.get(names.split_member(member)[0])
    call = None if record is None else batch_call(record)
    if call is not None:
        await deps.calls.record(call, 0, 0, outcome="not_sent")
    await deps.batch_store.forget(member)


async def settle_results(deps: WorkerDeps, batch_id: str, members: list[str]) -> None:
    """Every request's outcome, read from the ended batch and settled on its job."""
    assert deps.batches is not None
    waiting = {names.split_member(member)[0]: member for member in members}
    async for custom_id, outcome in deps.batches.results(batch_id):
        member = waiting.pop(custom_id, None)
        if member is not None:
            await settle_one(deps, batch_id, member, outcome)
    if waiting:  # the lane's far lease brings them back through the report queue
        log.warning("batch_results_missing", batch_id=batch_id, jobs=len(waiting))


async def settle_one(deps: WorkerDeps, batch_id: str, member: str, outcome: BatchOutcome) -> None:
    assert deps.batch_store is not None
    record = await deps.jobs.get(names.split_member(member)[0])
    if record is None or record.get("evicted"):
        return  # gone past its retention: nothing left to count it in
    name, error = await _close_call(deps, record, outcome)
    if not await deps.batch_store.return_job(member, batch_id, name, error):
        await deps.batch_store.forget(member)  # cancelled while it was in the batch: it leaves
    log.info("batch_request_settled", job_id=record["job_id"], batch_id=batch_id, outcome=name)


async def _close_call(
    deps: WorkerDeps, record: dict[str, str], outcome: BatchOutcome
) -> tuple[str, dict[str, Any] | None]:
    """Closes the job's batch call as the outcome says; returns the outcome's name and error."""
    call = batch_call(record)
    if isinstance(outcome, Answered):
        await _save_answer(deps, record, call, outcome.answer)
        return "answered", None
    if isinstance(outcome, Failed):
        if call is not None:  # an errored request is not billed
            await deps.calls.record(call, 0, 0, outcome="failed")
        error = {"reason": outcome.error.reason, "code": outcome.error.error_code}
        return ("failed" if isinstance(outcome.error, PermanentJobError) else "retry"), error
    if call is not None:  # canceled or expired: never processed, never billed
        await deps.calls.record(
            call, 0, 0, outcome="cancelled" if isinstance(outcome, Canceled) else "not_sent"
        )
    if isinstance(outcome, Expired):
        return "expired", None
    return "canceled", {
        "reason": "the provider cancelled the job's batch request",
        "code": "provider_unavailable",
    }


async def _save_answer(
    deps: WorkerDeps, record: dict[str, str], call: PaidCall | None, answer: ReportAnswer
) -> None:
    """The answer's cost closes its call and the answer is saved with it, in one step (the ledger's
    RECORD): counted once, however often this runs; saved only while the job still runs."""
    checkpoint = Checkpoint(
        text=answer.text,
        model=answer.model,
        input_tokens=billed_input_tokens(answer),
        output_tokens=answer.output_tokens,
        offline=False,
        source=record.get("batch_source", ""),
        input_name=record.get("batch_input", "input"),
        request_id=answer.request_id,
        cache_read_tokens=answer.cache_read_tokens,
        cache_write_tokens=answer.cache_write_tokens,
        output_limit_reached=answer.output_limit_reached,
    )
    if call is None:
        log.warning("batch_call_missing", job_id=record["job_id"])
        return
    entry = call_entries(record).get(call.call_id, {})
    first = entry.get("outcome") != "answered"
    await deps.calls.record(
        call,
        billed_input_tokens(answer),
        answer.output_tokens,
        request_id=answer.request_id,
        outcome="answered",
        checkpoint=checkpoint,
        text=answer.text,
        cache_read_tokens=answer.cache_read_tokens,
        cache_write_tokens=answer.cache_write_tokens,
    )
    if first:  # the metrics count a request once too (a repeated settle finds it answered)
        usage = CallUsage(
            answer.input_tokens,
            answer.output_tokens,
            answer.request_id,
            cache_read_tokens=answer.cache_read_tokens,
            cache_write_tokens=answer.cache_write_tokens,
        )
        model_billed(deps.metrics, answer.model, usage, lane="batch")
