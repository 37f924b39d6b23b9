"""EVENTS_MAX_STREAMS_PER_USER: how many event streams one user may hold open at once, across every
API process, whichever credential opened them; a stream's slot frees when it closes, or when the
process holding it dies and stops refreshing its lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from service.api.events.leases import StreamLeases
from service.core.errors import Unavailable
from service.core.settings import Settings
from service.store.connection import open_redis
from service.store.jobs import JobStore
from service.store.stream_leases import StreamLeaseStore
from tests.api.events.support import EventStream, LiveApi, complete, live_api, open_events, start
from tests.conftest import bearer, create_key, make_settings, submit

URL = "https://example.com/data/sales.csv"
CAP = 3


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data", events_max_streams_per_user=CAP)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as api:
        yield api


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


def events_path(job_id: str) -> str:
    return f"/api/reports/{job_id}/events"


async def hold(
    stack: AsyncExitStack, client: httpx.AsyncClient, path: str, headers: Mapping[str, str] | None = None
) -> EventStream:
    """Opens a stream and keeps it open until ``stack`` closes; its snapshot is read."""
    stream = await stack.enter_async_context(open_events(client, path, headers))
    await stream.next()
    return stream


def assert_over_the_cap(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")  # no stream was started
    assert response.json()["error"] == "rate_limited" and int(response.headers["retry-after"]) >= 1


async def eventually(condition: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition still false"
        await asyncio.sleep(0.05)


async def test_a_user_over_the_cap_gets_429_before_any_stream_starts(
    live: LiveApi, alice: dict[str, str], settings: Settings
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    bob = bearer(await create_key(settings, "bob", "free"))
    bobs_job = (await submit(live.client, bob, URL))["jobId"]
    async with AsyncExitStack() as stack:
        for _ in range(CAP):
            await hold(stack, live.client, events_path(job_id), alice)
        assert_over_the_cap(await live.client.get(events_path(job_id), headers=alice))
        await hold(stack, live.client, events_path(bobs_job), bob)  # another user is not affected
        assert live.fanout.subscriber_count == CAP + 1


async def test_streams_opened_with_the_events_token_count_for_the_jobs_owner(
    live: LiveApi, alice: dict[str, str]
) -> None:
    accepted = await submit(live.client, alice, URL)
    async with AsyncExitStack() as stack:
        for _ in range(CAP):
            await hold(stack, live.client, accepted["eventsUrl"])  # no Authorization header at all
        assert_over_the_cap(await live.client.get(accepted["eventsUrl"]))
        assert_over_the_cap(await live.client.get(events_path(accepted["jobId"]), headers=alice))


async def test_the_cap_holds_across_api_processes(settings: Settings, alice: dict[str, str]) -> None:
    async with live_api(settings) as first, live_api(settings) as second, AsyncExitStack() as stack:
        job_id = (await submit(first.client, alice, URL))["jobId"]
        held = [await hold(stack, first.client, events_path(job_id), alice) for _ in range(CAP - 1)]
        await hold(stack, second.client, events_path(job_id), alice)
        for process in (first, second):
            assert_over_the_cap(await process.client.get(events_path(job_id), headers=alice))
        await held[0].stop()
        await held[0].response.aclose()  # the client goes away: its slot frees, fleet-wide

        async def second_admits() -> bool:
            async with second.client.stream("GET", events_path(job_id), headers=alice) as response:
                assert response.status_code in (200, 429)
                return response.status_code == 200

        await eventually(second_admits)


async def test_refused_and_finished_streams_leave_no_slot_taken(
    live: LiveApi, alice: dict[str, str], settings: Settings
) -> None:
    """404s, 204s and streams that end by themselves give their slot back at once."""
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    jobs = JobStore(redis)
    try:
        finished = (await submit(live.client, alice, URL))["jobId"]
        await start(jobs, finished)
        await complete(jobs, finished)
        for _ in range(CAP * 3):
            assert (await live.client.get(events_path("0" * 32), headers=alice)).status_code == 404
            assert (await live.client.get(events_path(finished), headers=alice)).status_code == 200
        leases = StreamLeaseStore(redis)
        await eventually(lambda: _none_left(leases, "alice"))
    finally:
        await redis.aclose()


async def _none_left(leases: StreamLeaseStore, user_id: str) -> bool:
    return await leases.count(user_id) == 0


async def test_a_process_shutting_down_gives_back_the_slots_of_its_streams_at_once(
    settings: Settings, alice: dict[str, str]
) -> None:
    """Clients reconnect to another process after a deploy: their old streams must not count."""
    redis = open_redis(settings.redis_url, fail_fast=True)
    try:
        async with live_api(settings) as live, AsyncExitStack() as stack:
            job_id = (await submit(live.client, alice, URL))["jobId"]
            for _ in range(CAP):
                await hold(stack, live.client, events_path(job_id), alice)
            assert await StreamLeaseStore(redis).count("alice") == CAP
            live.server.server.should_exit = True  # as SIGTERM does; the streams are still open
            await eventually(lambda: _none_left(StreamLeaseStore(redis), "alice"), timeout=5)
    finally:
        await redis.aclose()


async def test_a_keeper_stopping_gives_back_leases_whose_streams_have_not_closed_yet(
    settings: Settings,
) -> None:
    """uvicorn's graceful shutdown may end before every stream has: their leases go all the same."""
    redis = open_redis(settings.redis_url, fail_fast=True)
    try:
        store = StreamLeaseStore(redis)
        keeper = StreamLeases(store, cap=CAP, lease_seconds=30)
        keeper.start()
        _ = [await keeper.acquire("alice") for _ in range(CAP)]  # held, never released
        assert await store.count("alice") == CAP
        await keeper.stop()
        assert await store.count("alice") == 0
        with pytest.raises(Unavailable):  # and a late arrival is told to go elsewhere, not left waiting
            await keeper.acquire("alice")
    finally:
        await redis.aclose()


async def test_an_open_stream_keeps_its_slot_past_the_lease_time(redis_url: str, tmp_path: Path) -> None:
    """The process holding a stream refreshes its lease while it is open."""
    settings = make_settings(
        redis_url, tmp_path / "data", events_max_streams_per_user=1, events_stream_lease_seconds=1
    )
    key = bearer(await create_key(settings, "alice", "pro"))
    async with live_api(settings) as live, AsyncExitStack() as stack:
        job_id = (await submit(live.client, key, URL))["jobId"]
        await hold(stack, live.client, events_path(job_id), key)
        await asyncio.sleep(2.5)
        assert_over_the_cap(await live.client.get(events_path(job_id), headers=key))


async def test_a_crashed_processes_leases_run_out_by_themselves(
    live: LiveApi, alice: dict[str, str], settings: Settings
) -> None:
    """What a process killed with its streams open leaves behind: leases nobody refreshes."""
    job_id = (await submit(live.client, alice, URL))["jobId"]
    redis = open_redis(settings.redis_url, fail_fast=True)
    try:
        dead = StreamLeaseStore(redis)
        granted = await dead.acquire(
            [("alice", f"dead-process:{n}") for n in range(CAP)], cap=CAP, lease_ms=1000
        )
        assert granted == [True] * CAP
    finally:
        await redis.aclose()
    assert_over_the_cap(await live.client.get(events_path(job_id), headers=alice))
    await asyncio.sleep(1.1)
    async with AsyncExitStack() as stack:
        await hold(stack, live.client, events_path(job_id), alice)


async def test_many_users_at_their_cap_cost_few_redis_connections(live: LiveApi, settings: Settings) -> None:
    users = [bearer(await create_key(settings, f"user{n}", "pro")) for n in range(20)]
    paths = []
    for key in users:
        job_id = (await submit(live.client, key, URL))["jobId"]
        paths += [(events_path(job_id), key)] * CAP
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, client_name="test-driver")
    limits = httpx.Limits(max_connections=None)
    try:
        async with (
            httpx.AsyncClient(base_url=live.url, timeout=10, limits=limits) as client,
            AsyncExitStack() as stack,
        ):
            await asyncio.gather(*(hold(stack, client, path, key) for path, key in paths))
            assert live.fanout.subscriber_count == len(paths) == 60
            clients = await redis.client_list()
            connections = [c for c in clients if not c.get("name", "").startswith("test-")]
    finally:
        await redis.aclose()
    assert len(connections) <= 4, connections  # 2 here: the pool and the events reader
