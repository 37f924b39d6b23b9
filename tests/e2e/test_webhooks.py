"""Webhooks from real processes started with the Procfile's commands: a worker killed with SIGKILL in
the middle of a delivery loses nothing, nor does a Redis restart while a delivery is being retried,
and a job cancelled in the API process gets its webhook from the worker fleet."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.dev.embedded_redis import EmbeddedRedis
from tests.conftest import InputFiles
from tests.e2e.support import Client, new_key
from tests.fakes.processes import ServiceProcess, service_env, start_api, start_worker
from tests.fakes.webhook_receiver import STALL, webhook_receiver

pytestmark = pytest.mark.slow

TIMEOUT = 2  # WEBHOOK_TIMEOUT_SECONDS: a delivery is leased for this plus 5 s


async def callback_settled(client: Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.status(job_id)
        callback: dict[str, Any] = status["callback"]  # type: ignore[assignment]
        if callback["state"] != "pending":
            return status
        assert time.monotonic() < deadline, f"the callback never settled: {status}"
        await asyncio.sleep(0.1)


async def submit(client: Client, input_url: str, callback: str) -> str:
    body = {"inputDataUrl": input_url, "callbackUrl": callback}
    response = await client.http.post("/api/reports", json=body, headers=client.headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def test_a_worker_killed_mid_delivery_does_not_lose_the_delivery(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, tmp_path: Path
) -> None:
    env = {**env, "WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT)}
    logs = tmp_path / "logs"
    api, url = await start_api(env, logs)
    processes.append(api)
    async with webhook_receiver() as receiver, httpx.AsyncClient(base_url=url, timeout=10) as http:
        receiver.answers = [STALL]  # the first attempt gets no answer: the worker dies waiting
        client = Client(http, await new_key(env, "alice"))
        job_id = await submit(client, inputs.add("a.csv", "x,y\n1,2\n"), receiver.hook())
        doomed = start_worker(env, logs, name="doomed")
        processes.append(doomed)
        [first] = await receiver.wait_for(1, timeout=40)
        doomed.process.kill()
        killed_at = time.monotonic()
        processes.append(start_worker(env, logs, name="survivor"))
        status = await callback_settled(client, job_id, timeout=40)
        secret = (await http.get("/api/webhooks/secret", headers=client.headers)).json()["secret"]
    assert status["state"] == "completed"
    assert status["callback"] == {"url": receiver.hook(), "state": "delivered", "attempts": 2}
    first_again, second = receiver.requests
    assert first_again is first
    # Not sent again while the dead worker's lease held (no early duplicate), and soon after it ran out.
    assert second.at - first.at >= TIMEOUT + 5 - 0.5 and second.at - killed_at < TIMEOUT + 5 + 5
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    assert second.verified(secret)["type"] == "report.completed"


async def test_a_job_cancelled_in_the_api_gets_its_webhook_from_a_worker(
    env: dict[str, str], processes: list[ServiceProcess], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    api, url = await start_api(env, logs)
    processes.append(api)
    async with webhook_receiver() as receiver, httpx.AsyncClient(base_url=url, timeout=10) as http:
        client = Client(http, await new_key(env, "bob"))
        job_id = await submit(client, "https://example.com/never-fetched.csv", receiver.hook())
        assert (await http.delete(f"/api/reports/{job_id}", headers=client.headers)).status_code == 200
        processes.append(start_worker(env, logs))  # the API process sends nothing itself
        [got] = await receiver.wait_for(1, timeout=40)
        status = await callback_settled(client, job_id, timeout=20)
        secret = (await http.get("/api/webhooks/secret", headers=client.headers)).json()["secret"]
    assert status["state"] == "cancelled" and status["callback"]["state"] == "delivered"
    payload = got.verified(secret)
    assert payload["type"] == "report.cancelled" and payload["data"]["jobId"] == job_id


async def test_a_redis_restart_while_a_delivery_is_retried_loses_nothing(
    processes: list[ServiceProcess], inputs: InputFiles, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    env = service_env(
        server.url, tmp_path / "data", WEBHOOK_RETRY_BASE_SECONDS="0.3", WEBHOOK_RETRY_MAX_SECONDS="0.6"
    )
    logs = tmp_path / "logs"
    try:
        api, url = await start_api(env, logs)
        processes.append(api)
        processes.append(start_worker(env, logs))
        async with webhook_receiver() as receiver, httpx.AsyncClient(base_url=url, timeout=10) as http:
            receiver.answers = [503] * 10_000  # failing until Redis has been restarted
            client = Client(http, await new_key(env, "carol"))
            job_id = await submit(client, inputs.add("c.csv", "x,y\n1,2\n"), receiver.hook())
            await receiver.wait_for(1, timeout=40)
            server.stop()  # SIGTERM: Redis writes its append-only file
            await asyncio.sleep(1)
            server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=True)
            server.start()
            receiver.answers = []  # 200 from now on
            status = await callback_settled(client, job_id, timeout=40)
            secret = (await http.get("/api/webhooks/secret", headers=client.headers)).json()["secret"]
    finally:
        server.stop()
    assert status["callback"]["state"] == "delivered" and status["callback"]["attempts"] >= 2
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert receiver.requests[-1].verified(secret)["data"]["jobId"] == job_id
