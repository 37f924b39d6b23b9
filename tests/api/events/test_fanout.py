"""The shared events reader under load and trouble: no event lost between snapshot and live, clients
freed on disconnect, few Redis connections, a dropped reader connection, SIGTERM of a real API."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from service.api.events.subscriber import BACKLOG_LIMIT, Subscriber
from service.api.events.wire import stream_id
from service.api.tokens import sign_events_token
from service.client.sse import SseEvent
from service.core.settings import Settings
from service.dev.embedded_redis import free_port
from service.store import names
from service.store.jobs import JobStore
from tests.api.events.support import EventStream, LiveApi, complete, ids, live_api, open_events, start
from tests.conftest import bearer, create_key, make_settings, submit
from tests.fakes.processes import service_env, start_api

URL = "https://example.com/data/sales.csv"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    # Hundreds of streams of one user: the per-user cap has tests of its own (test_leases.py).
    return make_settings(redis_url, tmp_path / "data", events_ping_seconds=0.5, events_max_streams_per_user=0)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as api:
        yield api


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, client_name="test-driver")
    yield client
    await client.aclose()


@pytest.fixture
def jobs(redis: aioredis.Redis) -> JobStore:
    return JobStore(redis)


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


def many_streams_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=None))


def events_path(job_id: str) -> str:
    return f"/api/reports/{job_id}/events"


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition still false"
        await asyncio.sleep(0.02)


async def open_many(
    stack: AsyncExitStack[bool | None], client: httpx.AsyncClient, paths: list[tuple[str, dict[str, str]]]
) -> list[EventStream]:
    """Opens every stream at once and waits for each one's snapshot."""
    streams = await asyncio.gather(
        *(stack.enter_async_context(open_events(client, path, headers)) for path, headers in paths)
    )
    await asyncio.gather(*(stream.next() for stream in streams))
    return list(streams)


async def test_no_event_is_lost_or_repeated_between_the_snapshot_and_live_events(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis
) -> None:
    """Subscribers join at every moment while a job changes state as fast as Redis allows: each one
    gets exactly the stream entries after the id of its snapshot, in order, and a snapshot equal to
    the entry it names."""
    job_id = (await submit(live.client, alice, URL))["jobId"]
    await start(jobs, job_id, stage="s0", progress=0)
    watchers = 40
    seen: list[list[SseEvent]] = [[] for _ in range(watchers)]

    async def drive() -> dict[str, dict[str, str]]:
        for step in range(1, 120):
            await jobs.advance(job_id, stage=f"s{step}", progress=min(step, 99))
            await asyncio.sleep(0.003)
        await complete(jobs, job_id)  # a finished stream stays whole until it is swept
        return dict(await redis.xrange(names.job_events(job_id)))

    async def watch(client: httpx.AsyncClient, index: int) -> None:
        await asyncio.sleep(index * 0.015)
        async with open_events(client, events_path(job_id), alice) as stream:
            seen[index].append(await stream.next())
            with contextlib.suppress(AssertionError):  # "the stream ended": checked below
                while True:
                    seen[index].append(await stream.next(timeout=10))

    async with many_streams_client(live.url) as client:
        driver = asyncio.create_task(drive())
        await asyncio.gather(*(watch(client, index) for index in range(watchers)))
        history = await driver
    for events in seen:
        snapshot, rest = events[0], events[1:]
        assert snapshot.id is not None
        after = [entry_id for entry_id in history if stream_id(entry_id) > stream_id(snapshot.id)]
        assert ids(rest) == after
        assert snapshot.json() == SseEvent(None, "progress", history[snapshot.id]["data"]).json()
        assert rest[-1].event == "completed"
    assert live.fanout.subscriber_count == 0


async def test_many_subscribers_of_one_job_all_get_every_event(
    live: LiveApi, alice: dict[str, str], jobs: JobStore
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    async with many_streams_client(live.url) as client, AsyncExitStack() as stack:
        streams = await open_many(stack, client, [(events_path(job_id), alice)] * 25)
        assert live.fanout.subscriber_count == 25 and live.fanout.watched_jobs == 1
        await start(jobs, job_id)
        for stream in streams:
            assert (await stream.next()).json()["state"] == "active"
        await complete(jobs, job_id)
        for stream in streams:
            events = await stream.until_end()
            assert [event.event for event in events] == ["progress", "completed"]


async def test_disconnected_clients_are_freed_at_once(live: LiveApi, alice: dict[str, str]) -> None:
    """No subscriber, watched stream or task outlives its client."""
    job_ids = [(await submit(live.client, alice, URL))["jobId"] for _ in range(3)]
    async with open_events(live.client, events_path(job_ids[0]), alice) as warm_up:
        await warm_up.next()  # sse-starlette starts its one shutdown watcher task on first use
    await eventually(lambda: live.fanout.subscriber_count == 0)
    tasks_before = len(asyncio.all_tasks())

    async with many_streams_client(live.url) as client, AsyncExitStack() as stack:
        await open_many(stack, client, [(events_path(job_id), alice) for job_id in job_ids * 20])
        assert (live.fanout.subscriber_count, live.fanout.watched_jobs) == (60, 3)
    await eventually(lambda: live.fanout.subscriber_count == 0 and live.fanout.watched_jobs == 0)
    await eventually(lambda: len(asyncio.all_tasks()) <= tasks_before)


async def api_connections(redis: aioredis.Redis) -> list[dict[str, str]]:
    """Connections to Redis other than this test's own (the API runs in this process)."""
    clients: list[dict[str, str]] = await redis.client_list()
    return [c for c in clients if not c.get("name", "").startswith("test-")]


async def test_the_api_holds_few_redis_connections_however_many_subscribe(
    live: LiveApi, alice: dict[str, str], redis: aioredis.Redis
) -> None:
    submitted = [await submit(live.client, alice, URL) for _ in range(10)]
    for job in submitted[:2]:  # warm the key cache and the signing secret, as any running API has
        async with open_events(live.client, job["eventsUrl"]) as stream:
            await stream.next()
    paths = [(events_path(job["jobId"]), alice) for job in submitted] * 15
    paths += [(job["eventsUrl"], {}) for job in submitted] * 15
    async with many_streams_client(live.url) as client, AsyncExitStack() as stack:
        await open_many(stack, client, paths)
        assert live.fanout.subscriber_count == 300
        connections = await api_connections(redis)
    assert len(connections) <= 4, connections
    assert [c["name"] for c in connections].count("rs-events-reader") == 1


async def test_a_dropped_reader_connection_loses_no_event(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis
) -> None:
    """Redis errors on the shared read are ridden out: it backs off, reconnects, and resumes from the
    last entry it had read, so the subscriber still gets every event in order."""
    job_id = (await submit(live.client, alice, URL))["jobId"]
    await start(jobs, job_id)
    async with open_events(live.client, events_path(job_id), alice) as stream:
        await stream.next()
        await asyncio.sleep(0.05)  # the reader is blocked in XREAD now
        reader = [c for c in await redis.client_list() if c.get("name") == "rs-events-reader"]
        assert len(reader) == 1
        await redis.client_kill_filter(_id=reader[0]["id"])
        for progress in (20, 30, 40):
            await jobs.advance(job_id, stage="summarizing", progress=progress)
        received = [await stream.next() for _ in range(3)]
    assert [event.json()["progress"] for event in received] == [20, 30, 40]


def test_a_client_too_slow_to_keep_up_is_ended_not_silently_skipped() -> None:
    """Past its backlog limit a subscriber gets what is queued, then its stream ends; the client
    reconnects with Last-Event-ID and reads the rest from Redis."""
    released: list[Subscriber] = []
    subscriber = Subscriber("j", "alice", [b"snapshot"], "1-0", released.append)
    for sequence in range(BACKLOG_LIMIT - 1):
        assert subscriber.deliver(b"event", (2, sequence), terminal=False)
    assert not subscriber.deliver(b"too many", (3, 0), terminal=False)
    assert subscriber.last == (2, BACKLOG_LIMIT - 2)

    async def drain() -> int:
        count = 0
        while await subscriber.next() is not None:
            count += 1
        return count

    assert asyncio.run(drain()) == BACKLOG_LIMIT


async def test_sigterm_ends_open_streams_cleanly_and_promptly(
    redis_url: str, tmp_path: Path, settings: Settings, alice: dict[str, str]
) -> None:
    """uvicorn waits for open responses before it exits; the streams end at once with a proper end of
    body (not a reset), so clients reconnect to another instance and the process exits."""
    api, url = await start_api(service_env(redis_url, tmp_path / "data"), tmp_path / "logs")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            job_id = (await submit(client, alice, URL))["jobId"]
            async with open_events(client, events_path(job_id), alice) as stream:
                await stream.next()
                signalled = time.monotonic()
                api.signal(signal.SIGTERM)
                assert await stream.until_end(timeout=5) == []
                ended_after = time.monotonic() - signalled
            assert stream.ended_cleanly
        assert ended_after < 2.0, ended_after
        assert await api.wait(10) in (0, -signal.SIGTERM)
        assert "without completing response" not in api.log()
    finally:
        api.stop()


async def test_subscribing_while_redis_is_unreachable_answers_503_json(tmp_path: Path) -> None:
    """Not a stream that hangs: the contract's 503 with Retry-After, and the reader keeps going."""
    secret = "s" * 48  # configured, so the token is checked without Redis
    dead = make_settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path / "data", signing_secret=secret)
    job_id = "a" * 32
    token = sign_events_token(secret.encode(), job_id, key_id="0" * 12, expires_at=int(time.time()) + 60)
    async with live_api(dead) as live:
        response = await live.client.get(f"{events_path(job_id)}?token={token}")
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable" and response.headers["retry-after"]
        assert live.fanout.subscriber_count == 0
