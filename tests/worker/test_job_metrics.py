"""What the pipeline counts and announces, where the reading found it wrong: the plan of a job given
up after repeated crashes, and the final progress count of a fast answer."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from service.core.settings import Settings
from service.providers.base import CallUsage, ProgressThrottle, ReportAnswer, ReportRequest, UsageListener
from service.report.renderer import PdfRenderer
from service.store import names
from service.store.policies import start_policy
from service.worker.stages import summarizing_progress
from tests.conftest import InputFiles, bearer, create_key, make_settings, submit, worker_deps
from tests.store.support import claim
from tests.worker.support import run_once


class FastProvider:
    """Streams a running count, then its final count at once: well inside one throttle interval."""

    async def count_input_tokens(self, request: ReportRequest) -> int:
        return 10

    async def write_report(
        self, request: ReportRequest, on_usage: UsageListener | None = None
    ) -> ReportAnswer:
        progress = ProgressThrottle(on_usage)
        await progress.update(CallUsage(10, 100))
        await progress.finish(CallUsage(10, 3000))
        return ReportAnswer("# Report\n\nShort.", "stub-model", 10, 3000)


async def test_a_job_given_up_after_repeated_crashes_is_counted_under_its_plan(
    api: httpx.AsyncClient, redis_url: str, inputs: InputFiles, renderer: PdfRenderer, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path / "data", max_crash_restarts=0)
    key = bearer(await create_key(settings, "pat", "pro"))
    job_id = (await submit(api, key, inputs.add("a.csv", "x,y\n1,2\n")))["jobId"]
    async with worker_deps(settings, renderer, FastProvider()) as deps:
        dying = replace(start_policy(settings), lease_ms=1)
        for _ in range(2):  # its worker died, beside others; then again, running alone: its own doing
            assert (await claim(deps.jobs, job_id, dying)).proceed
            await asyncio.sleep(0.005)
        assert await run_once(deps, job_id) == "failed"
        assert deps.metrics.pending("jobs_finished_total", plan="pro", state="failed") == 1
        assert deps.metrics.pending("jobs_finished_total", plan="", state="failed") == 0


async def test_the_final_output_count_is_saved_with_the_answer_that_begins_rendering(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "pat", "free"))
    job_id = (await submit(api, key, inputs.add("a.csv", "x,y\n1,2\n")))["jobId"]
    async with worker_deps(settings, renderer, FastProvider()) as deps:
        assert await run_once(deps, job_id) == "completed"
        [entry] = (await deps.calls.entries(job_id)).values()
    assert (entry["output"], entry["outcome"]) == (3000, "answered")
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    entries = await client.xrange(names.job_events(job_id))
    await client.aclose()
    stages = [json.loads(fields["data"]) for _, fields in entries if fields["event"] == "progress"]
    after = stages[[s["stage"] for s in stages].index("rendering") - 1]
    assert after == {"progress": summarizing_progress(100), "state": "active", "stage": "summarizing"}
