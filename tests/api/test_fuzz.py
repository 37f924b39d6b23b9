"""Property: no request, however malformed, gets a 5xx other than 503, and every error the service
answers is the contract's JSON ``{"error", "message"}``. Hypothesis writes the requests (every route
of ``service.app.ROUTES``, any method, job ids of every shape, credentials good, bad and non-ASCII,
events tokens, odd Last-Event-ID, Idempotency-Key, Content-Type and query strings, bodies of random
JSON, deep nesting or bytes that are not UTF-8, framed honestly, chunked, or with a Content-Length
that lies) and sends them byte by byte to the live API on a real Redis. The server's log must hold no
unhandled error either: a 500 nobody stayed to read still counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.core.settings import Settings
from service.store.jobs import JobStore
from tests.api.events.support import complete, start
from tests.api.fuzz_requests import BODY_ROUTES, ROUTE_METHODS, World, requests
from tests.api.raw_http import RawRequest, RawResponse, send
from tests.conftest import LiveServer, bearer, create_key, make_settings, submit

EXAMPLES = 200  # per property; about 10 s each here, every example a fresh connection
METRICS_TOKEN = "metrics-token-for-the-fuzz-test"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout
    # One live server for every example, on purpose: starting one per example would cost seconds.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
JOB = "/api/reports/" + "a" * 32


@pytest.fixture
def fuzz_settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data", metrics_token=METRICS_TOKEN, events_ping_seconds=1)


@pytest.fixture
async def world(fuzz_settings: Settings) -> AsyncIterator[World]:
    alice, bob = (
        await create_key(fuzz_settings, "alice", "pro"),
        await create_key(fuzz_settings, "bob", "free"),
    )
    async with (
        LiveServer(create_app(fuzz_settings, configure_logs=False)) as live,
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
    ):
        queued = await submit(client, bearer(alice), "https://example.com/a.csv")
        finished = await submit(client, bearer(alice), "https://example.com/b.csv")
        foreign = await submit(client, bearer(bob), "https://example.com/c.csv")
        upload = await client.post(
            "/api/inputs", content=b"a,b\n", headers={**bearer(alice), "Content-Type": "text/csv"}
        )
        redis = aioredis.Redis.from_url(fuzz_settings.redis_url, decode_responses=True)
        await start(JobStore(redis), finished["jobId"])
        await complete(JobStore(redis), finished["jobId"])
        await redis.aclose()
        jobs = (queued, finished, foreign)
        yield World(
            port=live.port,
            key=f"Bearer {alice}".encode(),
            other_keys=[f"Bearer {bob}".encode(), f"Bearer {METRICS_TOKEN}".encode()],
            job_ids=[job["jobId"] for job in jobs],
            tokens={job["jobId"]: job["eventsUrl"].partition("?token=")[2] for job in jobs},
            upload_url=upload.json()["inputDataUrl"],
        )


def check(request: RawRequest, response: RawResponse | None) -> None:
    if response is None:
        assert request.framing == "long", "the server closed without answering"
        return
    assert response.status < 500 or response.status == 503, (response.status, response.body[:300])
    if not response.from_the_app:
        assert response.status == 400, response  # uvicorn refusing bytes that are not HTTP at all
        return
    if response.status >= 400 and request.method != b"HEAD":
        assert response.headers["content-type"].startswith("application/json"), response.headers
        body = response.json()
        assert (
            isinstance(body, dict)
            and isinstance(body.get("error"), str)
            and isinstance(body.get("message"), str)
        )


async def answered(world: World, request: RawRequest) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await send(world.port, request)
    check(request, response)
    assert not [entry for entry in logs if entry["event"] == "unhandled_error"], logs


@pytest.mark.timeout(90)
@FUZZ
@given(data=st.data())
async def test_no_request_to_any_endpoint_gets_a_5xx_or_an_error_outside_the_contract(
    world: World, data: st.DataObject
) -> None:
    await answered(world, data.draw(requests(world, ROUTE_METHODS)))


@pytest.mark.timeout(90)
@FUZZ
@given(data=st.data())
async def test_no_body_sent_to_the_endpoints_that_read_one_gets_a_5xx_or_an_error_outside_the_contract(
    world: World, data: st.DataObject
) -> None:
    await answered(world, data.draw(requests(world, BODY_ROUTES)))


# What the properties found before the fixes (500s each), tried on every run whatever is drawn.
KNOWN = {
    "superscript-token": (b"GET", JOB + "/events?token=%C2%B2%C2%B2.0123456789ab." + "A" * 43, [], b""),
    "non-ascii-token": (b"GET", JOB + "/events?token=9999999999.%C3%A9." + "A" * 43, [], b""),
    "absurd-last-event-id": (b"GET", JOB + "/events", [(b"Last-Event-ID", b"99999999999999999999-0")], b""),
    "deep-json": (
        b"POST",
        "/api/reports",
        [(b"Content-Type", b"application/json")],
        b"[" * 5000 + b"]" * 5000,
    ),
    "cut-short": (b"POST", "/api/reports", [(b"Content-Type", b"application/json")], b"{}"),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
@pytest.mark.parametrize("signed_in", [True, False])
async def test_requests_that_once_got_a_500_are_answered_in_the_contract(
    world: World, name: str, signed_in: bool
) -> None:
    method, target, head, body = KNOWN[name]
    credentials = [(b"Authorization", world.key)] if signed_in else []
    framing = "long" if name == "cut-short" else "length"
    await answered(world, RawRequest(method, target.encode(), credentials + head, body, framing))
