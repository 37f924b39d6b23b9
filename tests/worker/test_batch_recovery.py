"""Exactly once across crashes: a driver that dies after writing its intent, before or after the
create call, is followed by one that finds the batch (or learns none exists) instead of sending the
jobs again. The death is injected at the provider boundary, in process: the batch API raises a
``BaseException`` no handler catches, as a kill would end the process there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.providers.base import ReportRequest
from service.providers.batch import (
    BatchApi,
    BatchIntent,
    BatchLookup,
    BatchOutcome,
    BatchStatus,
    CancelResult,
)
from service.report.renderer import PdfRenderer
from service.worker.batch_driver import BatchDriver
from service.worker.batch_results import settle_results
from service.worker.resources import WorkerDeps
from tests.conftest import InputFiles, api_with, bearer, create_key, worker_deps
from tests.fakes.anthropic import FakeAnthropic
from tests.worker.batch_support import batch_settings, run_with_driver, submit_batch
from tests.worker.support import CSV, run_once, status


class Killed(BaseException):
    """The driver's process dies here."""


class DyingBatches:
    """The real batch API, but the create call kills its caller, before or after it reaches the
    provider."""

    def __init__(self, real: BatchApi, *, after_create: bool) -> None:
        self.real, self.after_create = real, after_create
        self.create_window = real.create_window

    async def create(self, requests: Sequence[tuple[str, ReportRequest]]) -> BatchStatus:
        if self.after_create:
            await self.real.create(requests)
        raise Killed

    async def status(self, batch_id: str) -> BatchStatus:
        return await self.real.status(batch_id)

    async def cancel(self, batch_id: str) -> CancelResult:
        return await self.real.cancel(batch_id)

    def results(self, batch_id: str, model: str = "") -> AsyncIterator[tuple[str, BatchOutcome]]:
        return self.real.results(batch_id, model)

    async def find(
        self, intent: BatchIntent, *, claimed: Collection[str] = (), now: datetime | None = None
    ) -> BatchLookup:
        return await self.real.find(intent, claimed=claimed, now=now)


async def prepared_jobs(deps: WorkerDeps, job_ids: list[str]) -> None:
    """Each job claimed and handed to the lane, as a worker does."""
    for job_id in job_ids:
        assert await run_once(deps, job_id) == "active"
        record = await deps.jobs.get(job_id)
        assert record is not None and record["batch_state"] == "pending"


async def dies_in_create(deps: WorkerDeps, *, after_create: bool) -> None:
    assert deps.batches is not None
    real = deps.batches
    deps.batches = DyingBatches(real, after_create=after_create)
    try:
        await asyncio.sleep(deps.settings.batch_window_seconds)
        with pytest.raises(Killed):
            await BatchDriver(deps).send_due()
    finally:
        deps.batches = real


def later(seconds: float) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


@dataclass
class Lane:
    deps: WorkerDeps
    job_ids: list[str]
    # Runs a worker and the driver until the jobs end; returns their states and the user's usage.
    finished: Callable[[], Awaitable[tuple[list[str], dict[str, Any]]]]


@pytest.fixture
async def lane(
    redis_url: str, tmp_path: Path, inputs: InputFiles, renderer: PdfRenderer, fake_anthropic: FakeAnthropic
) -> AsyncIterator[Lane]:
    # llm_timeout_seconds bounds the create call, so the window in which a batch may still appear.
    settings = batch_settings(redis_url, tmp_path, fake_anthropic, llm_timeout_seconds=2.0)
    async with api_with(settings) as api, worker_deps(settings, renderer) as deps:
        key = bearer(await create_key(settings, "eve", "pro"))
        url = inputs.add("a.csv", CSV)
        job_ids = [await submit_batch(api, key, url) for _ in range(2)]
        await prepared_jobs(deps, job_ids)

        async def finished() -> tuple[list[str], dict[str, Any]]:
            await run_with_driver(settings, deps)
            usage: dict[str, Any] = (await api.get("/api/usage", headers=key)).json()
            return [str((await status(api, key, job_id))["state"]) for job_id in job_ids], usage

        yield Lane(deps, job_ids, finished)


async def test_a_driver_dead_between_intent_and_create_is_followed_by_one_batch(
    lane: Lane, fake_anthropic: FakeAnthropic
) -> None:
    deps, job_ids = lane.deps, lane.job_ids
    await dies_in_create(deps, after_create=False)
    assert fake_anthropic.batches.created == []
    assert deps.batch_store is not None and await deps.batch_store.intent() is not None

    # While the create call could still be on its way, nobody sends the jobs again.
    await BatchDriver(deps).step()
    assert fake_anthropic.batches.created == [] and await deps.batch_store.intent() is not None
    # Once no batch can appear any more, the jobs wait again and go out in one batch.
    await BatchDriver(deps, clock=later(120)).step()
    assert await deps.batch_store.intent() is None

    states, usage = await lane.finished()
    assert states == ["completed", "completed"]
    (batch,) = fake_anthropic.batches.created
    assert sorted(custom_id for custom_id, _ in fake_anthropic.batches.requests(batch)) == sorted(job_ids)
    billed = fake_anthropic.bill.tokens("batch")
    assert usage["outputTokens"] == billed.output_tokens and usage["reports"] == 2


async def test_a_driver_dead_after_create_is_followed_by_the_batch_it_created(
    lane: Lane, fake_anthropic: FakeAnthropic
) -> None:
    deps, job_ids = lane.deps, lane.job_ids
    await dies_in_create(deps, after_create=True)
    (batch,) = fake_anthropic.batches.created  # it reached the provider; its id was never recorded
    assert deps.batch_store is not None and await deps.batch_store.intent() is not None

    await BatchDriver(deps).step()  # finds it from the intent
    assert await deps.batch_store.intent() is None
    for job_id in job_ids:
        record = await deps.jobs.get(job_id)
        assert record is not None and (record["batch_state"], record["batch_id"]) == ("sent", batch)

    states, usage = await lane.finished()
    assert states == ["completed", "completed"]
    assert fake_anthropic.batches.created == [batch]  # never sent again
    billed = fake_anthropic.bill.tokens("batch")
    assert usage["outputTokens"] == billed.output_tokens and usage["reports"] == 2
    assert usage["reservedTokens"] == 0


async def test_results_settled_twice_count_once_and_move_each_job_once(
    lane: Lane, fake_anthropic: FakeAnthropic
) -> None:
    deps, job_ids = lane.deps, lane.job_ids
    await asyncio.sleep(deps.settings.batch_window_seconds)
    await BatchDriver(deps).send_due()
    (batch,) = fake_anthropic.batches.created
    assert deps.batch_store is not None
    members = await deps.batch_store.members(batch)
    # A driver that died midway through the results leaves the batch followed: the next reads them again.
    await settle_results(deps, batch, members[:1])
    await settle_results(deps, batch, members)
    for job_id in job_ids:
        record = await deps.jobs.get(job_id)
        assert record is not None and (record["state"], record["batch_state"]) == ("queued", "answered")
    states, usage = await lane.finished()  # the batch is settled a third time, by the driver
    assert states == ["completed", "completed"]
    billed = fake_anthropic.bill.tokens("batch")
    assert usage["outputTokens"] == billed.output_tokens and usage["reports"] == 2
    assert usage["inputTokens"] == billed.input_tokens + billed.cache_read_tokens + billed.cache_write_tokens
