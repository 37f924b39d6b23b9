"""Helpers for events tests: the API on a real uvicorn with its fan-out in reach, and an SSE reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import orjson
import redis.asyncio as aioredis

from service.api.events.fanout import EventFanout
from service.app import create_app
from service.client.sse import SseEvent, SseParser
from service.core.settings import Settings
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from service.store import names
from service.store.job_types import Retention, StartPolicy
from service.store.jobs import JobStore
from tests.conftest import LiveServer, run_burst_worker, worker_deps
from tests.store.support import cancel as cancel_job
from tests.store.support import claim
from tests.store.support import complete as complete_job
from tests.store.support import fail as fail_job

RETENTION = Retention(seconds=600, count=1000)
START = StartPolicy(max_crashes=3, cap_free=0, cap_pro=0, lease_ms=60_000)
RESULT = {"model": "claude-test", "inputTokens": 120, "outputTokens": 30, "tokensUsed": 150}


async def start(jobs: JobStore, job_id: str, *, stage: str = "fetching", progress: int = 10) -> None:
    """Starts a job as a worker does (its first progress event), then moves it on as asked."""
    outcome = await claim(jobs, job_id, START)
    assert outcome.proceed, outcome
    if (stage, progress) != ("fetching", 10):
        assert await jobs.advance(job_id, stage=stage, progress=progress)


async def advance_text(redis: aioredis.Redis, job_id: str, offset: int, delta: str) -> str:
    """Appends a ``text`` event (the model's answer as it streams) to the job's stream, as the
    worker will: ``{"offset": <characters before this delta>, "delta": ...}``. Its entry id."""
    data = orjson.dumps({"offset": offset, "delta": delta}).decode()
    entry_id: str = await redis.xadd(names.job_events(job_id), {"event": "text", "data": data})
    return entry_id


async def complete(jobs: JobStore, job_id: str) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")  # the usage period the worker would count it in
    assert await complete_job(jobs, job_id, RESULT, RETENTION, pdf_key="reports/x.pdf", period=period)


async def fail(jobs: JobStore, job_id: str, reason: str) -> None:
    assert await fail_job(jobs, job_id, reason, RETENTION, code="input_rejected")


async def cancel(jobs: JobStore, job_id: str) -> None:
    assert await cancel_job(jobs, job_id, RETENTION, queued_seconds=RETENTION.seconds) in (
        "queued",
        "active",
    )


@dataclass
class LiveApi:
    url: str
    client: httpx.AsyncClient
    server: LiveServer

    @property
    def fanout(self) -> EventFanout:
        """The running app's fan-out, as its lifespan handed it to the handlers."""
        state = cast(dict[str, Any], self.server.server.lifespan.state)
        fanout: EventFanout = state["fanout"]
        return fanout


@asynccontextmanager
async def live_api(settings: Settings) -> AsyncIterator[LiveApi]:
    app = create_app(settings, configure_logs=False)
    async with LiveServer(app) as live, httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        yield LiveApi(live.url, client, live)


class EventStream:
    """Events of one open stream, read by a background task so waiting with a timeout never
    cancels the read itself."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SseParser()
        self.ended_cleanly: bool | None = None  # True: the server finished the body properly
        self._queue: asyncio.Queue[SseEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for line in self.response.aiter_lines():
                event = self.parser.feed(line)
                if event is not None:
                    self._queue.put_nowait(event)
            self.ended_cleanly = True
        except httpx.TransportError:
            self.ended_cleanly = False
        finally:
            self._queue.put_nowait(None)

    async def next(self, timeout: float = 5.0) -> SseEvent:
        event = await asyncio.wait_for(self._queue.get(), timeout)
        assert event is not None, "the stream ended"
        return event

    async def until_end(self, timeout: float = 5.0) -> list[SseEvent]:
        """Every further event; fails unless the server ends the stream within ``timeout``."""
        events: list[SseEvent] = []
        async with asyncio.timeout(timeout):
            while (event := await self._queue.get()) is not None:
                events.append(event)
        return events

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])


@asynccontextmanager
async def open_events(
    client: httpx.AsyncClient, path: str, headers: Mapping[str, str] | Mapping[bytes, bytes] | None = None
) -> AsyncIterator[EventStream]:
    async with client.stream("GET", path, headers=headers or {}) as response:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"expected a stream, got {response.status_code}: {response.text}")
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        try:
            yield stream
        finally:
            await stream.stop()


def ids(events: list[SseEvent]) -> list[str | None]:
    return [event.id for event in events]


async def work_off_the_queue(settings: Settings, renderer: PdfRenderer) -> None:
    """Waits for the CLI's job to be queued, then runs it with a burst worker (offline provider)."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        async with asyncio.timeout(20):
            while not await client.zcard(names.QUEUE):
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    async with worker_deps(settings, renderer, OfflineProvider(chunk_delay=0)) as deps:
        await run_burst_worker(settings, deps)
