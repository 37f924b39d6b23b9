"""schemathesis holds ``/openapi.json`` to the live API: requests generated from the live schema
(bounded: ``EXAMPLES`` per operation, then one call per known job) go to a real uvicorn on a real
Redis, and every answer must be no 5xx, a documented status, a documented content type, with the
documented headers and a body that fits its schema. Known jobs (completed with a real PDF by a real
worker, failed, cancelled, queued) let the job endpoints answer 200, not only 404."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.openapi.document import openapi_document
from service.app import ROUTES, create_app
from service.core.settings import Settings
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from service.store.jobs import JobStore
from tests.api.events.support import fail, start
from tests.conftest import bearer, create_key, make_settings, run_burst_worker, worker_deps
from tests.fakes.threaded_server import serve_in_thread

EXAMPLES = 40  # per operation (fewer where there are fewer distinct requests): about 10 s here
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
METRICS_TOKEN = "metrics-token-for-the-schema-test"
OPERATIONS = [
    (path, method.upper())
    for path, methods in openapi_document(ROUTES)["paths"].items()
    for method in methods
]
CSV = b"region,revenue\nnorth,10\nsouth,12\n"
SUBMIT = {"inputDataUrl": "https://example.com/data/sales.csv", "idempotencyKey": "schema-test-one"}
# Requests generation rarely hits (a URL the API accepts, an idempotent replay, a mismatch), written
# out: a new job (202), the same again (200), the key with another URL (422), an upload (201).
EXPLICIT: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/api/reports", "POST"): [
        {"body": SUBMIT},
        {"body": SUBMIT},
        {"body": {**SUBMIT, "inputDataUrl": "https://example.com/other.csv"}},
        {"body": {"inputDataUrl": SUBMIT["inputDataUrl"]}, "headers": {"Idempotency-Key": "schema-test-two"}},
    ],
    ("/api/inputs", "POST"): [{"body": CSV.decode(), "media_type": "text/csv", "query": {"name": "a.csv"}}],
    ("/api/reports", "GET"): [{"query": {"state": "completed", "limit": 1}}],
}


@dataclass
class World:
    url: str
    schema: schemathesis.BaseSchema
    key: dict[str, str]
    finished: list[str]  # completed, failed, cancelled: their event streams end
    queued: list[str]
    seen: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))

    def headers(self, path: str) -> dict[str, str]:
        return bearer(METRICS_TOKEN) if path == "/metrics" else self.key


async def seed(settings: Settings, renderer: PdfRenderer, url: str, key: dict[str, str]) -> list[list[str]]:
    """Finished jobs (one completed by a real worker, a real PDF in storage, one failed, one
    cancelled), then queued ones."""
    async with httpx.AsyncClient(base_url=url, headers=key, timeout=10) as client:

        async def new(input_url: str) -> str:
            job_id: str = (await client.post("/api/reports", json={"inputDataUrl": input_url})).json()[
                "jobId"
            ]
            return job_id

        text = {"Content-Type": "text/csv"}
        upload = (await client.post("/api/inputs", content=CSV, headers=text)).json()["inputDataUrl"]
        completed = await new(upload)
        async with worker_deps(settings, renderer, OfflineProvider(chunk_delay=0)) as deps:
            await run_burst_worker(settings, deps)
        failed = await new("https://example.com/failed.csv")
        store = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            await start(JobStore(store), failed)
            await fail(JobStore(store), failed, "the input host answered 404")
        finally:
            await store.aclose()
        cancelled = await new("https://example.com/cancelled.csv")
        assert (await client.delete(f"/api/reports/{cancelled}")).status_code == 200
        queued = [await new(f"https://example.com/{n}.csv") for n in range(4)]
        return [[completed, failed, cancelled], queued]


@pytest.fixture(scope="module")
def world(
    redis_server: str, renderer: PdfRenderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    redis.Redis.from_url(redis_server).flushall()
    data: Path = tmp_path_factory.mktemp("schema-live")
    live = make_settings(redis_server, data, metrics_token=METRICS_TOKEN, events_ping_seconds=1)
    key = bearer(asyncio.run(create_key(live, "sam", "pro")))
    app = create_app(live, configure_logs=False)
    port, server = serve_in_thread(app, "127.0.0.1", 0, "schema-live-api", lifespan="on")
    url = f"http://127.0.0.1:{port}"
    try:
        finished, queued = asyncio.run(seed(live, renderer, url, key))
        yield World(url, schemathesis.openapi.from_url(url + "/openapi.json"), key, finished, queued)
    finally:
        server.stop()


def call(world: World, case: schemathesis.Case[Any], path: str) -> None:
    response = case.call_and_validate(headers=world.headers(path), checks=CHECKS, timeout=10)
    world.seen[(path, case.method)].add(response.status_code)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_the_live_api_answers_as_its_schema_says(world: World, path: str, method: str) -> None:
    operation = world.schema[path][method]
    # An event stream of a job still running never ends: only finished jobs' streams are opened.
    known = world.finished if path.endswith("/events") else world.finished + world.queued

    @given(case=operation.as_strategy(), job_id=st.one_of(st.none(), st.sampled_from(known)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,  # nothing written into the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def generated(case: schemathesis.Case[Any], job_id: str | None) -> None:
        if job_id is not None and "jobId" in (case.path_parameters or {}):
            case.path_parameters = {**(case.path_parameters or {}), "jobId": job_id}
        call(world, case, path)

    generated()
    for explicit in EXPLICIT.get((path, method), []):
        call(world, operation.Case(**explicit), path)
    if "{jobId}" in path:
        for job_id in known:  # every kind of job at least once, whatever was generated
            call(world, operation.Case(path_parameters={"jobId": job_id}), path)
    statuses = world.seen[(path, method)]
    assert any(200 <= status < 300 for status in statuses), f"{method} {path} never succeeded: {statuses}"
