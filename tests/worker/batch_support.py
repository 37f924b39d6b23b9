"""What the batch lane's tests share: settings with a short window, batch submissions, the fleet's
driver running beside a burst worker, and the job's events read back from Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio

from service.core.settings import Settings
from service.store import names
from service.worker.batch_driver import BatchDriver
from service.worker.resources import WorkerDeps
from tests.conftest import make_settings, run_burst_worker
from tests.fakes.anthropic import FakeAnthropic


def batch_settings(redis_url: str, tmp_path: Path, fake: FakeAnthropic, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": "sk-ant-test",
        "anthropic_base_url": fake.base_url,
        "batch_window_seconds": 0.3,
        "batch_poll_min_seconds": 0.05,
        "batch_poll_max_seconds": 0.2,
        **overrides,
    }
    return make_settings(redis_url, tmp_path / "data", **values)


async def submit_batch(
    api: httpx.AsyncClient, key: dict[str, str], url: str, *, lane: str = "batch", expect: int = 202
) -> str:
    response = await api.post("/api/reports", json={"inputDataUrl": url, "lane": lane}, headers=key)
    assert response.status_code == expect, response.text
    job_id: str = response.json()["jobId"]
    return job_id


@asynccontextmanager
async def driving(deps: WorkerDeps) -> AsyncIterator[BatchDriver]:
    """The fleet's batch driver, holding its lease from the start."""
    driver = BatchDriver(deps, lease_seconds=0.6)
    driver.start()
    try:
        yield driver
    finally:
        await driver.stop()


async def run_with_driver(settings: Settings, deps: WorkerDeps, timeout: float = 20.0) -> None:
    """A burst worker and the driver until every job has ended (batch jobs stay in the queue while
    they wait in their batch, so the burst worker runs on until they come back and finish)."""
    async with driving(deps):
        await asyncio.wait_for(run_burst_worker(settings, deps), timeout=timeout)


async def events(redis_url: str, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(names.job_events(job_id))
    finally:
        await client.aclose()
    return [(fields["event"], json.loads(fields["data"])) for _, fields in entries]


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)
