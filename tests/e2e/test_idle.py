"""An idle worker waits on Redis instead of polling it, and still starts work on time: a new job at
once (the marker wakes it), a retry when its backoff ends (the worker that put it back knows when),
with the idle look at the queue only every WORKER_IDLE_POLL_SECONDS (60 s here)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import InputFiles
from tests.e2e.support import Client, api_and_worker
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_errors import HttpFailure
from tests.fakes.processes import ServiceProcess, start_worker, wait_for_worker_ready

pytestmark = pytest.mark.slow

IDLE_POLL = "60"  # far longer than any wait below: only a wake-up or a known due time can explain them
BULLMQ_IDLE_COMMANDS_PER_MINUTE = 105  # ../shared/PEERS.md, measured on this machine


async def time_until(client: Client, job_id: str, check: str, timeout: float = 20) -> float:
    started = time.monotonic()
    await client.wait_for(job_id, check, timeout=timeout)
    return time.monotonic() - started


async def test_an_idle_worker_starts_a_new_job_at_once_and_a_retry_when_its_backoff_ends(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    env = {**env, "WORKER_IDLE_POLL_SECONDS": IDLE_POLL, "RETRY_BASE_SECONDS": "2"}
    async with api_and_worker(env, processes, tmp_path / "logs", "pat", ready=True) as (client, _):
        await asyncio.sleep(1.0)  # past its first look at the queue: from here on it is idle
        job_id = await client.submit(inputs.add("a.csv", "x,y\n1,2\n"))
        assert await time_until(client, job_id, "completed") < 5  # picked up at once, not in 60 s

        fake_anthropic.fail_next(HttpFailure(500, "api_error", "Internal server error"))
        retried = await client.submit(inputs.add("b.csv", "x,y\n3,4\n"))
        waited = await time_until(client, retried, "completed")
        done = await client.status(retried)
    assert done["attempts"] == 2  # the first attempt failed and was retried
    # The retry waits its backoff (1-2 s from RETRY_BASE_SECONDS=2) and no more than a moment longer.
    assert 1.0 <= waited < 6, waited


async def test_an_idle_worker_costs_redis_fewer_commands_a_minute_than_bullmqs(
    env: dict[str, str], processes: list[ServiceProcess], tmp_path: Path, redis_url: str
) -> None:
    env = {**env, "WORKER_IDLE_POLL_SECONDS": "30"}  # the default
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    await wait_for_worker_ready(worker)
    await asyncio.sleep(2.0)  # its start-up is not idle time
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await redis.config_resetstat()
        window = 15.0
        await asyncio.sleep(window)
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    mine = {"cmdstat_config|resetstat", "cmdstat_config", "cmdstat_info"}  # this test's own
    commands = sum(int(v["calls"]) for name, v in stats.items() if name not in mine)
    per_minute = commands * 60 / window
    assert per_minute < BULLMQ_IDLE_COMMANDS_PER_MINUTE / 2, (per_minute, stats)
