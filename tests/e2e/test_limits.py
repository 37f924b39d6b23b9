"""The shared LLM limiter with real worker processes against a fake Anthropic that enforces its own
limits: the fleet stays under them (no 429s), and a 529 storm costs nothing but time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import InputFiles
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_limits import FakeLimits
from tests.fakes.processes import ServiceProcess, cli, service_env, start_api, start_worker

pytestmark = pytest.mark.slow


async def run_jobs(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, tmp_path: Path, jobs: int,
    workers: int = 2, timeout: float = 60,
) -> list[dict[str, object]]:  # fmt: skip
    created = cli(env, "keys", "create", "--user", "fleet", "--plan", "pro")
    headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    processes.extend(start_worker(env, tmp_path / "logs", name=f"w{i}") for i in range(workers))
    source = inputs.add("data.csv", "region,sales\nnorth,10\nsouth,12\n")
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        job_ids = []
        for _ in range(jobs):
            response = await http.post("/api/reports", json={"inputDataUrl": source}, headers=headers)
            job_ids.append(response.json()["jobId"])
        deadline = time.monotonic() + timeout
        while True:
            statuses = [(await http.get(f"/api/reports/{j}", headers=headers)).json() for j in job_ids]
            if all(s["state"] in ("completed", "failed") for s in statuses) or time.monotonic() > deadline:
                statuses.append((await http.get("/api/usage", headers=headers)).json())
                return statuses
            await asyncio.sleep(0.25)


async def test_two_workers_share_the_limit_and_the_provider_never_says_429(
    redis_url: str, tmp_path: Path, inputs: InputFiles, fake_anthropic: FakeAnthropic,
    processes: list[ServiceProcess],
) -> None:  # fmt: skip
    per_minute, jobs = 60, 66  # a minute's burst, then six more at the refill rate of one a second
    fake_anthropic.limits = FakeLimits(requests_per_minute=per_minute)
    env = service_env(
        redis_url,
        tmp_path / "data",
        ANTHROPIC_API_KEY="sk-ant-fleet",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        LLM_REQUESTS_PER_MINUTE=str(per_minute),
        WORKER_CONCURRENCY="10",
        USER_MAX_ACTIVE_PRO="0",
    )
    started = time.monotonic()
    *statuses, usage = await run_jobs(env, processes, inputs, tmp_path, jobs)
    assert all(s["state"] == "completed" for s in statuses), [s["state"] for s in statuses]
    assert fake_anthropic.rate_limited_count == 0
    assert fake_anthropic.call_count == jobs
    assert usage["reports"] == jobs
    assert time.monotonic() - started > 5  # the last six really waited for the refill


async def test_a_529_storm_is_waited_out_and_every_report_billed_once(
    redis_url: str, tmp_path: Path, inputs: InputFiles, fake_anthropic: FakeAnthropic,
    processes: list[ServiceProcess],
) -> None:  # fmt: skip
    jobs = 10
    fake_anthropic.storm(15, status=529, retry_after="1")
    env = service_env(
        redis_url,
        tmp_path / "data",
        ANTHROPIC_API_KEY="sk-ant-storm",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        WORKER_CONCURRENCY="5",
        USER_MAX_ACTIVE_PRO="0",
        MAX_ATTEMPTS="1",
    )
    *statuses, usage = await run_jobs(env, processes, inputs, tmp_path, jobs)
    assert [s["state"] for s in statuses] == ["completed"] * jobs
    assert all(s["attempts"] == 1 for s in statuses)  # with one attempt allowed, a 529 must not spend it
    assert usage["reports"] == jobs
    assert fake_anthropic.call_count == jobs + 15  # the storm's refusals, then one paid call per job
