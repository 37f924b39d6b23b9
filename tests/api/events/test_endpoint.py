"""``GET /api/reports/{jobId}/events`` over a real uvicorn and a real Redis: the contract's snapshot,
live progress, terminal events, replay with Last-Event-ID, pings, 404s and 401s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from service.api.events.wire import stream_id
from service.api.tokens import sign_events_token
from service.core.settings import Settings
from service.store import names
from service.store.jobs import JobStore
from service.store.secrets import shared_signing_secret
from tests.api.events.support import (
    RESULT,
    LiveApi,
    cancel,
    complete,
    fail,
    ids,
    live_api,
    open_events,
    start,
)
from tests.conftest import bearer, create_key, make_settings, submit

URL = "https://example.com/data/sales.csv"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data", events_ping_seconds=0.2)


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
    """Drives job state changes the way workers do, through the store's atomic scripts."""
    return JobStore(redis)


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


def events_path(job_id: str) -> str:
    return f"/api/reports/{job_id}/events"


async def entries(redis: aioredis.Redis, job_id: str) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = await redis.xrange(names.job_events(job_id))
    return found


async def test_the_first_event_is_a_snapshot_of_the_job_as_it_is_now(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    async with open_events(live.client, events_path(job_id), alice) as stream:
        first = await stream.next()
    # A queued job has no stream yet: its snapshot carries the id of "nothing".
    queued = {"progress": 0, "state": "queued", "stage": "queued"}
    assert (first.event, first.id, first.json()) == ("progress", "0-0", queued)

    await start(jobs, job_id, stage="fetching", progress=10)
    await jobs.advance(job_id, stage="summarizing", progress=42)
    async with open_events(live.client, events_path(job_id), alice) as stream:
        first = await stream.next()
    assert first.json() == {"progress": 42, "state": "active", "stage": "summarizing"}
    assert first.id == (await entries(redis, job_id))[-1][0]


async def test_progress_events_follow_and_the_terminal_event_closes_the_stream(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    async with open_events(live.client, events_path(job_id), alice) as stream:
        await stream.next()
        await start(jobs, job_id, stage="fetching", progress=10)
        await jobs.advance(job_id, stage="summarizing", progress=30)
        await complete(jobs, job_id)  # right away: a finished stream stays whole until it is swept
        rest = await stream.until_end()
    assert [(event.event, event.json()) for event in rest] == [
        ("progress", {"progress": 10, "state": "active", "stage": "fetching"}),
        ("progress", {"progress": 30, "state": "active", "stage": "summarizing"}),
        ("progress", {"progress": 100, "state": "completed", "stage": "done"}),
        ("completed", {"pdfUrl": f"/api/reports/{job_id}/pdf", **RESULT}),
    ]
    # The ids are the stream's, so a reconnect can resume exactly.
    assert ids(rest) == [entry_id for entry_id, _ in await entries(redis, job_id)]
    assert stream.ended_cleanly


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
async def test_a_finished_job_sends_its_snapshot_then_its_terminal_event_then_closes(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis, settings: Settings,
    outcome: str,
) -> None:  # fmt: skip
    job_id = (await submit(live.client, alice, URL))["jobId"]
    if outcome != "cancelled":  # a queued job is cancelled before it ever started
        await start(jobs, job_id, stage="fetching", progress=10)
    if outcome == "completed":
        await complete(jobs, job_id)
    elif outcome == "failed":
        await fail(jobs, job_id, "the input host answered 404")
    else:
        await cancel(jobs, job_id)
    async with open_events(live.client, events_path(job_id), alice) as stream:
        events = await stream.until_end()
    snapshot, terminal = {
        "completed": (
            {"progress": 100, "state": "completed", "stage": "done"},
            {"pdfUrl": f"/api/reports/{job_id}/pdf", **RESULT},
        ),
        "failed": (
            {"progress": 10, "state": "failed", "stage": "fetching"},
            {"reason": "the input host answered 404", "code": "input_rejected"},
        ),
        "cancelled": ({"progress": 0, "state": "cancelled", "stage": "queued"}, {}),
    }[outcome]
    assert [(event.event, event.json()) for event in events] == [("progress", snapshot), (outcome, terminal)]
    stored = await entries(redis, job_id)
    # The terminal event keeps its stream id; the snapshot takes the one before, so resuming from
    # the snapshot replays the terminal event.
    assert events[1].id == stored[-1][0]
    assert events[0].id == (stored[-2][0] if len(stored) > 1 else "0-0")


async def test_last_event_id_replays_exactly_the_events_after_it_then_goes_live(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    await start(jobs, job_id, stage="fetching", progress=10)
    for progress in (20, 30, 40, 50):
        await jobs.advance(job_id, stage="summarizing", progress=progress)
    stored = await entries(redis, job_id)
    pivot = stored[1][0]
    headers = {**alice, "Last-Event-ID": pivot}
    async with open_events(live.client, events_path(job_id), headers) as stream:
        replayed = [await stream.next() for _ in stored[2:]]
        assert ids(replayed) == [entry_id for entry_id, _ in stored[2:]]
        assert [event.json()["progress"] for event in replayed] == [30, 40, 50]
        await jobs.advance(job_id, stage="rendering", progress=70)
        live_event = await stream.next()
        assert live_event.json() == {"progress": 70, "state": "active", "stage": "rendering"}
        await complete(jobs, job_id)
        assert [event.event for event in await stream.until_end()] == ["progress", "completed"]


async def test_resuming_from_a_queued_snapshot_replays_the_whole_stream(
    live: LiveApi, alice: dict[str, str], jobs: JobStore
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    await start(jobs, job_id, stage="fetching", progress=10)
    await jobs.advance(job_id, stage="summarizing", progress=30)
    async with open_events(live.client, events_path(job_id), {**alice, "Last-Event-ID": "0-0"}) as stream:
        assert [(await stream.next()).json()["progress"] for _ in range(2)] == [10, 30]


async def test_an_unknown_last_event_id_starts_over_with_a_snapshot(
    live: LiveApi, alice: dict[str, str], jobs: JobStore
) -> None:
    """An id no longer in the stream (trimmed) or never in it cannot be resumed exactly."""
    job_id = (await submit(live.client, alice, URL))["jobId"]
    await start(jobs, job_id, stage="fetching", progress=10)
    for bogus in ("1-1", "not-an-id"):
        async with open_events(live.client, events_path(job_id), {**alice, "Last-Event-ID": bogus}) as stream:
            first = await stream.next()
        assert first.json() == {"progress": 10, "state": "active", "stage": "fetching"}


async def test_resuming_after_the_terminal_event_answers_204_so_browsers_stop_reconnecting(
    live: LiveApi, alice: dict[str, str], jobs: JobStore, redis: aioredis.Redis
) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    await start(jobs, job_id, stage="fetching", progress=10)
    await complete(jobs, job_id)
    last = (await entries(redis, job_id))[-1][0]
    response = await live.client.get(events_path(job_id), headers={**alice, "Last-Event-ID": last})
    assert response.status_code == 204


async def test_a_comment_line_arrives_while_nothing_happens(live: LiveApi, alice: dict[str, str]) -> None:
    job_id = (await submit(live.client, alice, URL))["jobId"]
    async with open_events(live.client, events_path(job_id), alice) as stream:
        await stream.next()
        await asyncio.sleep(0.7)  # EVENTS_PING_SECONDS is 0.2 here
        assert stream.parser.comments >= 2


async def test_unknown_and_foreign_jobs_answer_404_json_not_a_stream(
    live: LiveApi, alice: dict[str, str], settings: Settings
) -> None:
    bob = bearer(await create_key(settings, "bob", "free"))
    bobs_job = (await submit(live.client, bob, URL))["jobId"]
    for job_id in ("0" * 32, "not-a-job", bobs_job):
        response = await live.client.get(events_path(job_id), headers=alice)
        assert response.status_code == 404, job_id
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"] == "not_found"
    assert live.fanout.subscriber_count == 0


async def test_events_token_admits_its_own_job_only_and_only_until_it_expires(
    live: LiveApi, alice: dict[str, str], redis: aioredis.Redis
) -> None:
    first, second = await submit(live.client, alice, URL), await submit(live.client, alice, URL)
    async with open_events(live.client, first["eventsUrl"]) as stream:
        assert (await stream.next()).event == "progress"  # no Authorization header needed

    token = first["eventsUrl"].partition("?token=")[2]
    key_id = token.split(".")[1]
    expired = sign_events_token(
        await shared_signing_secret(redis), first["jobId"], key_id=key_id, expires_at=int(time.time()) - 5
    )
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = [
        events_path(second["jobId"]) + f"?token={token}",  # another job's token
        events_path(first["jobId"]) + f"?token={expired}",
        events_path(first["jobId"]) + f"?token={tampered}",
        events_path(first["jobId"]),  # no credentials at all
    ]
    for path in refused:
        response = await live.client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"
    wrong_key = await live.client.get(events_path(first["jobId"]), headers=bearer("rsk_nope"))
    assert wrong_key.status_code == 401


async def test_ids_follow_stream_order(live: LiveApi, alice: dict[str, str], jobs: JobStore) -> None:
    """SSE ids are the stream's entry ids, so they increase with every event."""
    job_id = (await submit(live.client, alice, URL))["jobId"]
    async with open_events(live.client, events_path(job_id), alice) as stream:
        await stream.next()
        await start(jobs, job_id, stage="fetching", progress=10)
        await complete(jobs, job_id)
        events = await stream.until_end()
    positions = [stream_id(event.id or "") for event in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
