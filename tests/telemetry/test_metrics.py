"""Metrics: counted in each process, summed in Redis, served by the API for the whole fleet."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store.connection import open_redis
from service.store.metrics import MetricsStore
from service.telemetry.export import render
from service.telemetry.metrics import MetricsBuffer
from tests.conftest import (
    InputFiles,
    LiveServer,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    worker_deps,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_errors import overloaded

TOKEN = "metrics-token-for-tests-0123456789"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counts_and_histograms_add_up_across_processes(redis_url: str) -> None:
    client = open_redis(redis_url, fail_fast=False)
    one, two = MetricsBuffer("a:1"), MetricsBuffer("b:2")
    one.inc("jobs_finished_total", plan="pro", state="completed")
    two.inc("jobs_finished_total", 2, plan="pro", state="completed")
    for seconds in (0.003, 0.2, 0.2, 900.0):
        one.observe("job_queue_wait_seconds", seconds, plan="free")
    two.set_gauge("worker_jobs_in_flight", 3, worker="b:2")
    store = MetricsStore(client)
    await one.flush(store)
    await two.flush(store)
    body, content_type = await render(store)
    found = samples(body.decode())
    assert content_type.startswith("text/plain; version=")
    await client.aclose()
    assert value(found, "report_service_jobs_finished_total", plan="pro", state="completed") == 3
    assert value(found, "report_service_job_queue_wait_seconds_bucket", plan="free", le="0.005") == 1
    assert value(found, "report_service_job_queue_wait_seconds_bucket", plan="free", le="0.25") == 3
    assert value(found, "report_service_job_queue_wait_seconds_bucket", plan="free", le="+Inf") == 4
    assert value(found, "report_service_job_queue_wait_seconds_count", plan="free") == 4
    assert value(found, "report_service_worker_jobs_in_flight", worker="b:2") == 3
    assert value(found, "report_service_workers") == 1


def test_a_counted_request_is_what_inc_and_observe_count() -> None:
    """The request path's shortcut (keys built once per route) counts exactly what the general
    ``inc`` and ``observe`` count, at every bucket edge and past the last."""
    fast, general = MetricsBuffer("a:1"), MetricsBuffer("a:1")
    for seconds in (0.0, 0.005, 0.0051, 0.3, 1800.0, 5000.0):
        for route, method, status in (("/api/reports", "POST", 202), ("unmatched", "GET", 404)):
            fast.count_request(route, method, status, seconds)
            general.inc("http_requests_total", route=route, method=method, status=str(status))
            general.observe("http_request_duration_seconds", seconds, route=route)
    assert fast._counts == general._counts
    assert len(fast._counts) > 10


async def test_metrics_are_off_without_a_token_and_need_it_when_on(redis_url: str, tmp_path: Path) -> None:
    off = make_settings(redis_url, tmp_path / "off")
    async with (
        LiveServer(create_app(off, configure_logs=False)) as live,
        httpx.AsyncClient(base_url=live.url) as c,
    ):
        assert (await c.get("/metrics")).status_code == 404
    settings = make_settings(redis_url, tmp_path / "m", metrics_token=TOKEN)
    async with (
        LiveServer(create_app(settings, configure_logs=False)) as live,
        httpx.AsyncClient(base_url=live.url) as c,
    ):
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=bearer("wrong"))).status_code == 401
        answer = await c.get("/metrics", headers=bearer(TOKEN))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert "report_service_queue_depth" in answer.text


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> Settings:
    anthropic = {"anthropic_api_key": "sk-ant-metrics", "anthropic_base_url": fake_anthropic.base_url}
    return make_settings(
        redis_url, tmp_path / "data", metrics_token=TOKEN, metrics_flush_seconds=0.05, **anthropic
    )


async def test_a_few_jobs_show_up_in_the_fleet_metrics(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    key = bearer(await create_key(settings, "mia", "pro"))
    source = inputs.add("a.csv", "x,y\n1,2\n")
    job_ids = [(await api.post("/api/reports", json={"inputDataUrl": source}, headers=key)).json()["jobId"]]
    job_ids += [(await api.post("/api/reports", json={"inputDataUrl": source}, headers=key)).json()["jobId"]]
    await api.post("/api/reports", json={"inputDataUrl": source, "idempotencyKey": "k" * 8}, headers=key)
    await api.post("/api/reports", json={"inputDataUrl": source, "idempotencyKey": "k" * 8}, headers=key)
    await api.delete(f"/api/reports/{job_ids[1]}", headers=key)
    fake_anthropic.fail_next(overloaded(retry_after="0"))
    async with worker_deps(settings, renderer) as deps:
        await run_burst_worker(settings, deps)
        await deps.metrics.flush(MetricsStore(deps.jobs._redis))
    await asyncio.sleep(0.2)  # the API's own buffer flushes every 50 ms here
    found = samples((await api.get("/metrics", headers=bearer(TOKEN))).text)
    prefix = "report_service_"
    assert value(found, prefix + "reports_submitted_total", plan="pro", outcome="created") == 3
    assert value(found, prefix + "reports_submitted_total", plan="pro", outcome="replayed") == 1
    assert value(found, prefix + "jobs_finished_total", plan="pro", state="completed") == 2
    assert value(found, prefix + "jobs_finished_total", plan="pro", state="cancelled") == 1
    assert value(found, prefix + "job_retries_total", plan="pro", reason="throttled") == 1
    assert value(found, prefix + "provider_errors_total", model="claude-opus-4-7", status="529") == 1
    tokens_in = value(found, prefix + "llm_tokens_total", model="claude-opus-4-7", kind="input")
    assert tokens_in > 0 and value(found, prefix + "llm_cost_usd_total", model="claude-opus-4-7") > 0
    assert value(found, prefix + "job_queue_wait_seconds_count", plan="pro") == 2
    assert (
        value(found, prefix + "http_requests_total", route="/api/reports", method="POST", status="202") == 3
    )
    assert value(found, prefix + "queue_depth", lane="pro") == 0
    assert value(found, prefix + "jobs_active", plan="pro") == 0
