"""Completion webhooks from the worker fleet: real API (uvicorn), real Redis, real jobs in a burst
worker, the delivery loop, and a receiver on loopback that verifies with ``standardwebhooks``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import WebhookVerificationError

from service.core.settings import Settings
from service.inputs.addresses import AddressPolicy
from service.inputs.guard import Resolver
from service.report.renderer import PdfRenderer
from service.store.connection import open_redis
from service.store.jobs import JobStore
from service.store.policies import failed_retention
from service.worker.deliveries import DeliveryLoop
from service.worker.webhooks import Webhooks, open_webhooks
from tests.conftest import (
    InputFiles,
    api_with,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    worker_deps,
)
from tests.fakes.webhook_receiver import STALL, WebhookReceiver, webhook_receiver
from tests.inputs.support import resolving_to
from tests.store.support import cancel
from tests.worker.support import CSV

FAST = {"webhook_retry_base_seconds": 0.05, "webhook_retry_max_seconds": 0.2, "webhook_poll_seconds": 0.05}
ONLY_LOOPBACK = AddressPolicy(extra_allowed=frozenset({ip_address("127.0.0.1")}))


def hook_settings(redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(redis_url, tmp_path / "data", **{**FAST, **overrides})


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as live:
        yield live


@asynccontextmanager
async def fleet_webhooks(
    settings: Settings, *, policy: AddressPolicy | None = None, resolver: Resolver | None = None
) -> AsyncIterator[Webhooks]:
    redis = open_redis(settings.redis_url, fail_fast=False)
    try:
        async with open_webhooks(settings, redis, policy=policy, resolver=resolver) as hooks:
            yield hooks
    finally:
        await redis.aclose()


async def run_jobs(settings: Settings, renderer: PdfRenderer, hooks: Webhooks) -> None:
    """Every queued job, in a burst worker whose job ends schedule their webhooks."""
    async with worker_deps(settings, renderer) as deps:
        await run_burst_worker(settings, dataclasses.replace(deps, webhooks=hooks))


async def deliver_until_settled(
    hooks: Webhooks, api: httpx.AsyncClient, who: dict[str, str], job_id: str, timeout: float = 20
) -> dict[str, Any]:
    """Runs the delivery loop until the job's callback is delivered or failed; the final status."""
    loop = DeliveryLoop(hooks)
    loop.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            status: dict[str, Any] = (await api.get(f"/api/reports/{job_id}", headers=who)).json()
            if status["callback"]["state"] != "pending":
                return status
            assert time.monotonic() < deadline, f"the callback never settled: {status}"
            await asyncio.sleep(0.05)
    finally:
        await loop.stop()


async def submit(api: httpx.AsyncClient, who: dict[str, str], input_url: str, callback: str) -> str:
    response = await api.post(
        "/api/reports", json={"inputDataUrl": input_url, "callbackUrl": callback}, headers=who
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def secret_of(api: httpx.AsyncClient, who: dict[str, str]) -> str:
    secret: str = (await api.get("/api/webhooks/secret", headers=who)).json()["secret"]
    return secret


async def test_a_completed_jobs_webhook_verifies_with_its_users_secret_and_never_with_another_users(
    redis_url: str, tmp_path: Path, inputs: InputFiles, receiver: WebhookReceiver, renderer: PdfRenderer
) -> None:
    settings = hook_settings(redis_url, tmp_path)
    alice = bearer(await create_key(settings, "alice", "pro"))
    bob = bearer(await create_key(settings, "bob", "pro"))
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, inputs.add("sales.csv", CSV), receiver.hook())
        await run_jobs(settings, renderer, hooks)
        # Scheduled by the worker as the job ended (its loop's first scan looks at jobs 30 s old).
        status = await deliver_until_settled(hooks, api, alice, job_id)
        alice_secret, bob_secret = await secret_of(api, alice), await secret_of(api, bob)
    assert status["state"] == "completed"
    assert status["callback"] == {"url": receiver.hook(), "state": "delivered", "attempts": 1}
    [got] = receiver.requests
    payload = got.verified(alice_secret)
    with pytest.raises(WebhookVerificationError):
        got.verified(bob_secret)
    assert payload["type"] == "report.completed" and payload["timestamp"] == status["finishedAt"]
    assert payload["data"] == {
        **status,
        "callback": {"url": receiver.hook(), "state": "pending", "attempts": 0},
    }


async def test_a_receiver_answering_500_twice_then_200_gets_three_attempts_under_one_webhook_id(
    redis_url: str, tmp_path: Path, inputs: InputFiles, receiver: WebhookReceiver, renderer: PdfRenderer
) -> None:
    settings = hook_settings(redis_url, tmp_path)
    alice = bearer(await create_key(settings, "alice", "pro"))
    receiver.answers = [500, 500]
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, inputs.add("sales.csv", CSV), receiver.hook())
        await run_jobs(settings, renderer, hooks)
        status = await deliver_until_settled(hooks, api, alice, job_id)
        secret = await secret_of(api, alice)
    assert status["callback"] == {"url": receiver.hook(), "state": "delivered", "attempts": 3}
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same message each time
    assert all(r.verified(secret)["data"]["jobId"] == job_id for r in receiver.requests)
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(gap >= 0.025 for gap in gaps)  # backoff: at least half the base between attempts


async def test_a_receiver_that_never_answers_2xx_is_given_up_and_the_status_says_failed(
    redis_url: str, tmp_path: Path, inputs: InputFiles, receiver: WebhookReceiver, renderer: PdfRenderer
) -> None:
    settings = hook_settings(redis_url, tmp_path, webhook_give_up_seconds=1.0)
    alice = bearer(await create_key(settings, "alice", "pro"))
    receiver.answers = [503] * 1000
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, inputs.add("sales.csv", CSV), receiver.hook())
        await run_jobs(settings, renderer, hooks)
        status = await deliver_until_settled(hooks, api, alice, job_id)
    attempts = len(receiver.requests)
    assert status["callback"] == {"url": receiver.hook(), "state": "failed", "attempts": attempts}
    assert attempts >= 3 and len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    # None claimed after the give-up time (1 s after the first); one claimed just before it may reach
    # the receiver a moment later on a busy machine (its secret read, its connection).
    assert receiver.requests[-1].at - receiver.requests[0].at < 1.0 + 0.4
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == attempts  # and none after it failed


async def test_an_attempt_that_times_out_is_retried_under_the_same_webhook_id(
    redis_url: str, tmp_path: Path, inputs: InputFiles, receiver: WebhookReceiver, renderer: PdfRenderer
) -> None:
    settings = hook_settings(redis_url, tmp_path, webhook_timeout_seconds=0.5)
    alice = bearer(await create_key(settings, "alice", "pro"))
    receiver.answers = [STALL]
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, inputs.add("sales.csv", CSV), receiver.hook())
        await run_jobs(settings, renderer, hooks)
        status = await deliver_until_settled(hooks, api, alice, job_id)
    assert status["callback"]["state"] == "delivered" and status["callback"]["attempts"] == 2
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and second.at - first.at >= 0.5


async def test_a_failed_jobs_webhook_says_report_failed_with_its_error(
    redis_url: str, tmp_path: Path, inputs: InputFiles, receiver: WebhookReceiver, renderer: PdfRenderer
) -> None:
    settings = hook_settings(redis_url, tmp_path)
    alice = bearer(await create_key(settings, "alice", "pro"))
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, f"{inputs.base_url}/files/missing.csv", receiver.hook())
        await run_jobs(settings, renderer, hooks)
        status = await deliver_until_settled(hooks, api, alice, job_id)
        payload = receiver.requests[0].verified(await secret_of(api, alice))
    assert status["state"] == "failed" and status["callback"]["state"] == "delivered"
    assert payload["type"] == "report.failed" and payload["data"]["error"]["code"] == "input_rejected"


async def test_a_cancelled_jobs_webhook_goes_out_from_the_fleet(
    redis_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The user cancels through the API; no worker runs the job; the fleet's loop still delivers."""
    settings = hook_settings(redis_url, tmp_path)
    alice = bearer(await create_key(settings, "alice", "pro"))
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, "https://example.com/never-fetched.csv", receiver.hook())
        assert (await api.delete(f"/api/reports/{job_id}", headers=alice)).status_code == 200
        assert (await hooks.deliveries.due(10))[0] == [job_id]  # scheduled by the cancel itself
        status = await deliver_until_settled(hooks, api, alice, job_id)
        payload = receiver.requests[0].verified(await secret_of(api, alice))
    assert status["state"] == "cancelled" and status["callback"]["state"] == "delivered"
    assert payload["type"] == "report.cancelled" and payload["data"]["state"] == "cancelled"


async def test_a_job_ended_on_the_store_directly_has_its_webhook_scheduled_by_its_end(
    redis_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Whoever ends a job cannot forget its webhook: the ending script schedules it (here the cancel
    runs on the store directly, as if the API process had died right after it)."""
    settings = hook_settings(redis_url, tmp_path)
    alice = bearer(await create_key(settings, "alice", "pro"))
    async with api_with(settings) as api, fleet_webhooks(settings) as hooks:
        job_id = await submit(api, alice, "https://example.com/never-fetched.csv", receiver.hook())
        assert (await hooks.deliveries.due(10))[0] == []  # queued: nothing to send yet
        redis = open_redis(redis_url, fail_fast=False)
        try:
            assert await cancel(JobStore(redis), job_id, failed_retention(settings)) == "queued"
        finally:
            await redis.aclose()
        assert (await hooks.deliveries.due(10))[0] == [job_id]
        status = await deliver_until_settled(hooks, api, alice, job_id)
        payload = receiver.requests[0].verified(await secret_of(api, alice))
    assert status["callback"] == {"url": receiver.hook(), "state": "delivered", "attempts": 1}
    assert payload["type"] == "report.cancelled" and payload["data"]["jobId"] == job_id


async def test_a_name_that_resolves_privately_is_refused_at_every_attempt_until_the_delivery_fails(
    redis_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Accepted at submit (a name, not an address: no DNS in the API), refused where it counts: at
    connect time in the fleet, by the input fetcher's guard."""
    settings = hook_settings(redis_url, tmp_path, allow_private_input_urls=False, webhook_give_up_seconds=0.5)
    alice = bearer(await create_key(settings, "alice", "pro"))
    port = receiver.url.rsplit(":", 1)[1]
    private, asked = resolving_to(["10.9.8.7"])
    async with (
        api_with(settings) as api,
        fleet_webhooks(settings, policy=ONLY_LOOPBACK, resolver=private) as hooks,
    ):
        job_id = await submit(api, alice, "https://example.com/x.csv", f"http://hooks.test:{port}/hooks/x")
        assert (await api.delete(f"/api/reports/{job_id}", headers=alice)).status_code == 200
        status = await deliver_until_settled(hooks, api, alice, job_id)
    assert status["callback"]["state"] == "failed" and status["callback"]["attempts"] >= 2
    assert receiver.requests == [] and set(asked) == {"hooks.test"}
