"""Nothing stuck: a job arq ends outside our state machine (a Redis error at its start or while its
outcome is recorded, a payload gone, arq's own timeout) is retried or put back by the reaper, and
reaches a terminal state; never queued or active without a worker that will run it."""

from __future__ import annotations

from typing import Any

import httpx
import redis.asyncio as aioredis

from service.core.errors import Unavailable
from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store import names
from service.store.jobs import JobStore
from service.store.policies import failed_retention, start_policy
from service.worker.options import MAX_QUEUE_LOSSES, reap_lost_jobs, worker_options
from service.worker.outcomes import SETTLE_DEADLINE_SECONDS
from tests.conftest import (
    InputFiles,
    bearer,
    create_key,
    run_burst_worker,
    submit,
    worker_deps,
)
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

    async def start(self, job_id: str, *args: Any, **kwargs: Any) -> Any:
        self._blip("start")
        return await super().start(job_id, *args, **kwargs)

    async def fail(self, job_id: str, *args: Any, **kwargs: Any) -> Any:
        self._blip("fail")
        return await super().fail(job_id, *args, **kwargs)


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


async def arq_forgets(redis_url: str, job_id: str) -> None:
    """What arq does when it ends a job on its own (its timeout, an expired payload): the queue
    entry and the payload go, our record stays as it was. And the reaper's last look at the job
    was long ago."""
    client = aioredis.Redis.from_url(redis_url)
    await client.zrem(names.ARQ_QUEUE, job_id)
    await client.delete(names.arq_job(job_id))
    await client.zadd(names.LIVE_INDEX, {job_id: 0})
    await client.aclose()


async def test_the_reaper_puts_back_a_queued_job_the_queue_lost_and_it_completes(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    await arq_forgets(settings.redis_url, job_id)
    async with worker_deps(settings, renderer) as deps:
        retention = failed_retention(settings)
        assert await deps.jobs.reap(older_than_ms=0, limit=10, max_losses=3, failed=retention) == (1, 1, 0)
        await run_burst_worker(settings, deps)
        # Finished: out of the live index, never looked at again.
        assert await deps.jobs.reap(older_than_ms=0, limit=10, max_losses=3, failed=retention) == (0, 0, 0)
    assert (await status(api, key, job_id))["state"] == "completed"


async def test_a_running_job_lost_by_the_queue_is_put_back_once_its_lease_runs_out(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    redis_url = settings.redis_url
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        assert (await deps.jobs.start(job_id, start_policy(settings), stage="queued", progress=0)).proceed
        await arq_forgets(redis_url, job_id)  # arq timed it out; its worker is gone
        retention = failed_retention(settings)
        assert (await deps.jobs.reap(older_than_ms=0, limit=10, max_losses=3, failed=retention))[1] == 0
        client = aioredis.Redis.from_url(redis_url)
        await client.zadd(names.ACTIVE_PREFIX + "lee", {job_id: 0})  # the lease ran out
        await client.aclose()
        assert (await deps.jobs.reap(older_than_ms=0, limit=10, max_losses=3, failed=retention))[1] == 1
        assert (await status(api, key, job_id))["state"] == "queued"
        await run_burst_worker(settings, deps)
    done = await status(api, key, job_id)
    assert done["state"] == "completed" and done["crashRestarts"] == 0


async def test_a_job_the_queue_keeps_losing_fails_with_code_internal(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "lee", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", CSV)))["jobId"]
    async with worker_deps(settings, renderer) as deps:
        ctx = {"deps": deps}
        for _ in range(MAX_QUEUE_LOSSES):
            await arq_forgets(settings.redis_url, job_id)
            assert (await reap_lost_jobs(ctx))["put_back"] == 1
        await arq_forgets(settings.redis_url, job_id)
        assert (await reap_lost_jobs(ctx))["failed"] == 1
    done = await status(api, key, job_id)
    assert done["state"] == "failed" and done["error"]["code"] == "internal"  # type: ignore[index]
    usage = (await api.get("/api/usage", headers=key)).json()
    assert usage["reservedTokens"] == 0  # nothing it held is left behind


def test_arqs_own_timeout_comes_only_after_ours_and_the_time_to_record_the_outcome(
    settings: Settings,
) -> None:
    options = worker_options(settings)
    assert options["job_timeout"] > settings.job_timeout_seconds + SETTLE_DEADLINE_SECONDS
