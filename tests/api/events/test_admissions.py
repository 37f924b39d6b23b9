"""One subscriber's bad admission stays its own: the other streams opened with it start at once, and
the shared reader neither stops nor pauses (a bad Last-Event-ID used to fail the whole batch and put
the reader to sleep for two seconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from service.api.events.admissions import Admission, open_batch
from service.api.events.wire import Opening, valid_event_id
from service.core.settings import Settings
from service.store import names
from service.store.connection import open_redis
from service.store.event_streams import EventStreams, Opened, OpeningRefused
from tests.api.events.support import LiveApi, live_api, open_events
from tests.conftest import bearer, create_key, make_settings, submit

URL = "https://example.com/data/sales.csv"
# Past 2^64 - 1: Redis refuses it as a stream id, though it has the shape of one.
ABSURD_IDS = ["99999999999999999999-0", "0-18446744073709551616", "\u0663-\u0661", "1-1\n", "²-1"]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data", events_max_streams_per_user=0)  # 21 at once


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as api:
        yield api


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


Headers = Mapping[str, str] | Mapping[bytes, bytes]


def raw(headers: dict[str, str]) -> dict[bytes, bytes]:
    """Headers as bytes, so values httpx would refuse to encode (non-ASCII) can be sent."""
    return {name.encode(): value.encode() for name, value in headers.items()}


def events_path(job_id: str) -> str:
    return f"/api/reports/{job_id}/events"


@pytest.mark.parametrize("event_id", ABSURD_IDS)
def test_a_last_event_id_redis_would_refuse_is_not_resumed_from(event_id: str) -> None:
    assert valid_event_id(event_id) is None


def test_the_largest_ids_redis_accepts_are_still_resumed_from() -> None:
    largest = f"{2**64 - 1}-{2**64 - 1}"
    assert valid_event_id(largest) == largest


async def test_absurd_last_event_ids_get_a_snapshot_and_do_not_disturb_other_streams(
    live: LiveApi, alice: dict[str, str], settings: Settings
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    attackers: list[tuple[str, Headers]] = [
        (events_path(job_id), {**raw(alice), b"Last-Event-ID": bad.encode()}) for bad in ABSURD_IDS[:3]
    ]
    honest: list[tuple[str, Headers]] = [(events_path(job_id), alice)] * 10
    began = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10, limits=httpx.Limits(max_connections=None)) as client,
        AsyncExitStack() as stack,
    ):
        streams = await asyncio.gather(
            *(
                stack.enter_async_context(open_events(client, path, headers))
                for path, headers in attackers + honest
            )
        )
        firsts = await asyncio.gather(*(stream.next() for stream in streams))
    assert all(first.json()["state"] == "queued" for first in firsts)
    assert time.monotonic() - began < 1.5


async def test_an_admission_redis_refuses_fails_alone_and_the_reader_does_not_pause(
    live: LiveApi, alice: dict[str, str], settings: Settings
) -> None:
    """A job whose stream key holds the wrong type makes Redis refuse its opening read: that client
    gets the contract's JSON error; the twenty streams admitted in the same batch start."""
    poisoned, healthy = (
        (await submit(live.client, alice, URL))["jobId"],
        (await submit(live.client, alice, URL))["jobId"],
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    await redis.set(names.job_events(poisoned), "not a stream")
    await redis.aclose()
    async with httpx.AsyncClient(
        base_url=live.url, timeout=10, limits=httpx.Limits(max_connections=None)
    ) as client:

        async def first_event(job_id: str) -> tuple[int, str]:
            async with client.stream("GET", events_path(job_id), headers=alice) as response:
                if response.status_code != 200:
                    return response.status_code, (await response.aread()).decode()
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        return 200, line
            return 0, "ended"

        # No bound on how long this takes: the test's console logger renders the 500's traceback on
        # the event loop, which costs more than a second here (JSON logs in production do not).
        answers = await asyncio.gather(first_event(poisoned), *(first_event(healthy) for _ in range(20)))
        status, body = answers[0]
        assert status == 500 and '"error":"internal_error"' in body
        assert all(status == 200 for status, _ in answers[1:])
        began = time.monotonic()
        assert (await first_event(healthy))[0] == 200
        assert time.monotonic() - began < 0.5  # the reader went on at once, no back-off pause


class _WholeBatchFails(EventStreams):
    """A real store whose multi-job transactions fail as a whole (as a bug in one admission might)."""

    async def opening(self, jobs: Iterable[tuple[str, str | None]]) -> list[Opened | OpeningRefused]:
        wanted = list(jobs)
        if len(wanted) > 1:
            raise RuntimeError("the whole transaction failed")
        if wanted[0][0] == "bad":
            raise RuntimeError("this admission is the one at fault")
        return await super().opening(wanted)


async def test_a_batch_that_fails_as_a_whole_is_retried_one_admission_at_a_time(settings: Settings) -> None:
    redis = open_redis(settings.redis_url, fail_fast=True)
    streams = _WholeBatchFails(redis, redis)
    loop = asyncio.get_running_loop()
    batch = [Admission(job_id, None, loop.create_future()) for job_id in ("a" * 32, "bad", "b" * 32)]
    try:
        results = await open_batch(streams, batch)
    finally:
        await redis.aclose()
    assert isinstance(results[0], Opening) and isinstance(results[2], Opening)
    assert isinstance(results[1], RuntimeError)
    assert results[0].record is None  # opened for real: that job simply does not exist
