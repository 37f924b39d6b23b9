"""The request id of the POST that submitted a job is on every log line the worker writes for it."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import redis.asyncio as aioredis
import structlog

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store import names
from tests.conftest import InputFiles, bearer, create_key, run_burst_worker, worker_deps

# Every line a job writes once its record is loaded (job_started) and up to its end.
JOB_EVENTS = {"job_started", "job_stage", "job_completed"}


async def job_log_lines(settings: Settings, renderer: PdfRenderer) -> list[MutableMapping[str, Any]]:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
    return [entry for entry in logs if entry["event"] in JOB_EVENTS]


async def test_the_callers_x_request_id_is_on_the_jobs_worker_log_lines_with_its_job_id(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "rosa", "pro"))
    body = {"inputDataUrl": inputs.add("a.csv", "x,y\n1,2\n")}
    accepted = await api.post("/api/reports", json=body, headers={**key, "X-Request-ID": "deploy-check-42"})
    job_id = accepted.json()["jobId"]
    lines = await job_log_lines(settings, renderer)
    assert {entry["event"] for entry in lines} == JOB_EVENTS
    assert all(entry["request_id"] == "deploy-check-42" and entry["job_id"] == job_id for entry in lines)


async def test_a_job_submitted_without_one_carries_the_id_the_api_answered_with(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    key = bearer(await create_key(settings, "rosa", "pro"))
    body = {"inputDataUrl": inputs.add("a.csv", "x\n1\n")}
    accepted = await api.post("/api/reports", json=body, headers=key)
    lines = await job_log_lines(settings, renderer)
    assert lines and {entry["request_id"] for entry in lines} == {accepted.headers["x-request-id"]}


async def test_the_request_id_is_stored_with_the_job_and_a_replay_keeps_the_first(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles
) -> None:
    key = bearer(await create_key(settings, "rosa", "pro"))
    body = {"inputDataUrl": inputs.add("a.csv", "x\n1\n"), "idempotencyKey": "same-key-123"}
    first = await api.post("/api/reports", json=body, headers={**key, "X-Request-ID": "first-try"})
    again = await api.post("/api/reports", json=body, headers={**key, "X-Request-ID": "second-try"})
    assert (first.status_code, again.status_code, again.headers["x-request-id"]) == (202, 200, "second-try")
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        record = await client.hgetall(names.job(first.json()["jobId"]))
    finally:
        await client.aclose()
    assert record["request_id"] == "first-try"
    assert "traceparent" not in record  # tracing is off: nothing to continue
