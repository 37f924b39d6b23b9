"""Nothing stuck: a Redis error at a job's start or while its outcome is recorded, or a worker that
dies under its job, never leaves the job queued or active without a worker that will run it. The
queue is the schedule: a claimed job's score is its lease's end, so a dead worker's job comes due
again by itself, and the calls it left open are closed by the next worker to claim it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx

from service.core.errors import Unavailable
from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store import names
from service.store.calls import PaidCall
from service.store.jobs import JobStore
from service.store.policies import budget_period, start_policy
from tests.conftest import InputFiles, bearer, create_key, run_burst_worker, submit, worker_deps
from tests.store.support import cancel, claim
from tests.worker.support import CSV, status


class BlippingJobStore(JobStore):
    """The real store, unreachable for one call of ``start`` or of ``fail``."""

    def __init__(self, inner: JobStore, operation: str) -> None:
        self.__dict__.update(inner.__dict__)
        self.blip_on = operation

    def _blip(self, operation: str) -> None:
        if self.blip_on == operation:
            self.blip_on = ""
            raise Unavailable("the job store is unreachable; retry shortly")

    async def start(self, member: str, *args: Any, **kwargs: Any) -> Any:
        self._blip("start")
        return await super().start(member, *args, **kwargs)

    async def fail(self, record: dict[str, str], *args: Any, **kwargs: Any) -> Any:
        self._blip("fail")
        return await super().fail(record, *args, **kwargs)


async def test_a_redis_error_when_a_job_starts_retries_it_instead_of_stranding_it(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        deps.jobs = BlippingJobStore(deps.jobs, "start")
        await run_burst_worker(settings, deps)
    done = await status(api, key, job_id)
    assert (done["state"], done["attempts"]) == ("completed", 1)


async def test_a_redis_error_while_a_failure_is_recorded_still_ends_the_job_failed_with_its_code(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, f"{inputs.base_url}/files/missing.csv"))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        deps.jobs = BlippingJobStore(deps.jobs, "fail")
        await run_burst_worker(settings, deps)
    done = await status(api, key, job_id)
    assert done["state"] == "failed" and done["error"] == {
        "reason": "the input URL answered 404 Not Found",
        "code": "input_rejected",
    }


async def test_a_job_whose_worker_died_comes_due_at_its_leases_end_and_completes(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        short = replace(start_policy(settings), lease_ms=200)
        assert (await claim(deps.jobs, job_id, short)).proceed  # ... and its worker is never heard of again
        assert (await status(api, key, job_id))["state"] == "active"
        assert (await deps.jobs.due(10)).members == []  # not before its lease ends
        await asyncio.sleep(0.25)
        await run_burst_worker(settings, deps)
    done = await status(api, key, job_id)
    # A restart, not a new attempt.
    assert (done["state"], done["attempts"], done["crashRestarts"]) == ("completed", 1, 1)


async def test_a_job_cancelled_while_its_worker_died_mid_call_has_the_call_closed_by_the_next_worker(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    usage_key = names.usage("lee", budget_period(settings))
    async with worker_deps(settings, renderer) as deps:
        short = replace(start_policy(settings), lease_ms=200)
        assert (await claim(deps.jobs, job_id, short)).proceed
        call = PaidCall(job_id, "c1", usage_key, input_price_nusd=1000, output_price_nusd=5000)
        reservation = await deps.calls.reserve(
            call, input_tokens=500, worst_case=1500, budget=0, model="m", hold_key=usage_key
        )
        assert reservation.granted
        await deps.calls.record(call, 500, 40)  # streaming ... then the worker dies
        assert await cancel(deps.jobs, job_id) == "active"
        assert (await deps.jobs.usage("lee", budget_period(settings)))["reserved"] == 1500
        await asyncio.sleep(0.25)
        await run_burst_worker(settings, deps)  # finds it due: closes the call, lets it go
        assert await deps.jobs.queue_size() == 0
        assert (await deps.calls.entries(job_id))["c1"]["outcome"] == "lost"
    usage = (await api.get("/api/usage", headers=key)).json()
    assert (usage["inputTokens"], usage["outputTokens"], usage["reservedTokens"]) == (500, 40, 0)
    assert (await status(api, key, job_id))["state"] == "cancelled"


async def test_a_call_left_open_by_a_worker_that_handed_its_job_back_is_closed_by_the_next_one(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    """A drain hands the job back, and the process exits before its call's close reached Redis: the
    next worker to claim the job closes the call (counted as far as recorded, its hold released)."""
    key = bearer(await create_key(settings, "mia", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    usage_key = names.usage("mia", budget_period(settings))
    async with worker_deps(settings, renderer) as deps:
        started = await claim(deps.jobs, job_id, start_policy(settings))
        assert started.proceed
        call = PaidCall(job_id, "c1", usage_key, input_price_nusd=1000, output_price_nusd=5000)
        assert (
            await deps.calls.reserve(
                call, input_tokens=500, worst_case=1500, budget=0, model="m", hold_key=usage_key
            )
        ).granted
        await deps.calls.record(call, 500, 40)  # streaming when the drain's grace ended
        assert await deps.jobs.requeue(started.record, "drain", count_attempt=False, delay_seconds=0)
        await run_burst_worker(settings, deps)  # claims it, closes c1, runs the report to its end
        entries = await deps.calls.entries(job_id)
    assert entries["c1"]["outcome"] == "lost"
    done = await status(api, key, job_id)
    assert done["state"] == "completed"
    usage = (await api.get("/api/usage", headers=key)).json()
    assert usage["reservedTokens"] == 0  # no hold left behind
    assert usage["inputTokens"] >= 500 and usage["outputTokens"] >= 40  # c1 counted, with the report's own
