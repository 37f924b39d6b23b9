"""Redis going away under a running service: restarted under load (AOF), killed, or hung; the API
answers 503 fast and both processes recover by themselves."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from service.dev.embedded_redis import EmbeddedRedis
from tests.conftest import InputFiles
from tests.e2e.support import JOB_TIMEOUT, api_and_worker, new_key
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.processes import (
    ServiceProcess,
    service_env,
    start_api,
)

pytestmark = pytest.mark.slow


async def test_a_redis_restart_under_load_loses_no_job(
    processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    anthropic = {"ANTHROPIC_API_KEY": "sk-ant-r", "ANTHROPIC_BASE_URL": fake_anthropic.base_url}
    env = service_env(server.url, tmp_path / "data", JOB_TIMEOUT_SECONDS=str(JOB_TIMEOUT), **anthropic)
    fake_anthropic.first_byte_delay = 0.3
    try:
        async with api_and_worker(env, processes, tmp_path / "logs", "liam") as (client, _):
            source = inputs.add("d.csv", "x,y\n1,2\n")
            job_ids = [await client.submit(source) for _ in range(20)]
            await client.wait_for(job_ids[0], "completed")
            server.stop()  # SIGTERM: Redis flushes its append-only file
            await asyncio.sleep(1)
            server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=True)
            server.start()
            job_ids += [await client.submit(source) for _ in range(5)]
            for job_id in job_ids:
                assert (await client.wait_for(job_id, "completed", timeout=60))["state"] == "completed"
            assert (await client.usage())["reports"] == 25
    finally:
        server.stop()


async def test_the_api_answers_503_fast_while_redis_is_down_and_recovers_by_itself(
    processes: list[ServiceProcess], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    env = service_env(server.url, tmp_path / "data")
    key = await new_key(env, "mia")
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    body = {"inputDataUrl": "https://example.com/x.csv"}
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.post("/api/reports", json=body, headers=headers)).status_code == 202
            server.kill()
            for path in ("/readyz", "/api/usage"):
                started = time.monotonic()
                response = await http.get(path, headers=headers)
                assert time.monotonic() - started < 2.0
                assert (response.status_code, response.json()["error"]) == (503, "unavailable")
                assert response.headers["retry-after"] == "2"
            assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
            server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=True)
            server.start()
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.post("/api/reports", json=body, headers=headers)).status_code == 202
    finally:
        server.stop()


async def test_a_hung_redis_still_gets_a_503_within_two_seconds(
    processes: list[ServiceProcess], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    env = service_env(server.url, tmp_path / "data")
    key = await new_key(env, "noah")
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {key}"}
            assert (await http.get("/api/usage", headers=headers)).status_code == 200
            assert server._process is not None
            server._process.send_signal(signal.SIGSTOP)  # connections stay open; nothing answers
            started = time.monotonic()
            response = await http.get("/api/usage", headers=headers)
            assert response.status_code == 503
            assert time.monotonic() - started < 2.0
            server._process.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.2)
            assert (await http.get("/api/usage", headers=headers)).status_code == 200
    finally:
        server.stop()
