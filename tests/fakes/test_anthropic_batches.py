"""The fake's Message Batches API through the real SDK: the wire shapes the SDK parses, timing,
scripted errors, cancel, expiry, listing, and a bill that keeps batch usage apart at half price."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic

from tests.fakes.anthropic import FakeAnthropic

API_KEY = "sk-ant-test-fake-batches"
MODEL = "claude-haiku-4-5-20251001"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.reset()
    return server


@pytest.fixture
async def sdk(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    client = AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    yield client
    await client.close()


def params(text: str = "MARKER-b1 revenue", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 500, "messages": [{"role": "user", "content": text}], **extra}


def requests(*custom_ids: str) -> list[Any]:
    return [{"custom_id": custom_id, "params": params(f"MARKER-{custom_id}")} for custom_id in custom_ids]


async def ended(sdk: AsyncAnthropic, batch_id: str, within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while (batch := await sdk.messages.batches.retrieve(batch_id)).processing_status != "ended":
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.02)
    return batch


async def results(sdk: AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    return {item.custom_id: item.result async for item in await sdk.messages.batches.results(batch_id)}


async def test_a_batch_processes_for_its_duration_then_answers_each_request_under_its_custom_id(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    fake.batches.duration = 0.3
    batch = await sdk.messages.batches.create(requests=requests("job-a", "job-b"))
    assert batch.processing_status == "in_progress" and batch.results_url is None and batch.ended_at is None
    assert batch.request_counts.processing == 2 and batch.request_counts.succeeded == 0
    assert batch.id.startswith("msgbatch_")
    done = await ended(sdk, batch.id)
    assert (done.ended_at - done.created_at).total_seconds() >= 0.3
    assert (done.request_counts.succeeded, done.request_counts.processing) == (2, 0)
    assert done.results_url is not None and done.results_url.endswith(
        f"/v1/messages/batches/{batch.id}/results"
    )
    answers = await results(sdk, batch.id)
    assert set(answers) == {"job-a", "job-b"}
    message = answers["job-b"].message
    assert answers["job-b"].type == "succeeded" and "MARKER-job-b" in message.content[0].text
    assert (message.model, message.stop_reason, message.usage.service_tier) == (MODEL, "end_turn", "batch")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_scripted_and_invalid_requests_end_errored_with_the_api_error_shape(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    fake.batches.fail("job-busy", "overloaded_error")
    items: list[Any] = [*requests("job-ok", "job-busy"), {"custom_id": "job-bad", "params": {"model": MODEL}}]
    batch = await sdk.messages.batches.create(requests=items)
    done = await ended(sdk, batch.id)
    assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 2)
    answers = await results(sdk, batch.id)
    assert answers["job-ok"].type == "succeeded"
    assert answers["job-busy"].type == "errored"
    assert answers["job-busy"].error.error.type == "overloaded_error"
    assert answers["job-bad"].error.error.type == "invalid_request_error"
    assert "max_tokens" in answers["job-bad"].error.error.message


async def test_a_cancel_midway_leaves_early_requests_answered_and_the_rest_canceled(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    fake.batches.duration, fake.batches.cancel_delay = 1.6, 0.2
    batch = await sdk.messages.batches.create(requests=requests("c1", "c2", "c3", "c4"))
    await asyncio.sleep(1.0)  # c1 (0.4 s) and c2 (0.8 s) are done, c3 (1.2 s) is not
    canceling = await sdk.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    done = await ended(sdk, batch.id)
    assert (done.request_counts.succeeded, done.request_counts.canceled) == (2, 2)
    assert {key: value.type for key, value in (await results(sdk, batch.id)).items()} == {
        "c1": "succeeded", "c2": "succeeded", "c3": "canceled", "c4": "canceled"
    }  # fmt: skip


async def test_a_cancel_after_the_end_changes_nothing(fake: FakeAnthropic, sdk: AsyncAnthropic) -> None:
    batch = await sdk.messages.batches.create(requests=requests("late"))
    await ended(sdk, batch.id)
    after = await sdk.messages.batches.cancel(batch.id)
    assert after.processing_status == "ended" and after.cancel_initiated_at is None
    assert after.request_counts.succeeded == 1


async def test_requests_not_processed_by_the_expiry_end_expired(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    fake.batches.duration, fake.batches.expires_after = 1.0, 0.3
    batch = await sdk.messages.batches.create(requests=requests("e1", "e2", "e3", "e4"))
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(0.3, abs=0.01)
    done = await ended(sdk, batch.id)
    assert (done.request_counts.succeeded, done.request_counts.expired) == (1, 3)
    assert (await results(sdk, batch.id))["e4"].type == "expired"


async def test_the_listing_is_newest_first_and_pages_through_the_sdk(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    created = [(await sdk.messages.batches.create(requests=requests(f"l{n}"))).id for n in range(5)]
    listed = [batch.id async for batch in sdk.messages.batches.list(limit=2)]
    assert listed == created[::-1]
    first_page = await sdk.messages.batches.list(limit=2)
    assert [batch.id for batch in first_page.data] == created[:2:-1] and first_page.has_more


async def test_batch_creation_refuses_repeated_or_malformed_custom_ids(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="unique"):
        await sdk.messages.batches.create(requests=requests("same", "same"))
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        await sdk.messages.batches.create(requests=requests("has space"))
    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.batches.retrieve("msgbatch_unknown")
    assert fake.batches.created == []


async def test_batch_usage_is_billed_apart_from_realtime_calls_at_half_the_price(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    await sdk.messages.create(**params())
    realtime_tokens = fake.billed_tokens
    same: Any = {"custom_id": "same", "params": params()}
    batch = await sdk.messages.batches.create(requests=[same])
    await ended(sdk, batch.id)
    assert fake.billed_tokens == realtime_tokens  # the realtime count is untouched
    batch_tally = fake.bill.tokens("batch")
    assert (batch_tally.input_tokens, batch_tally.output_tokens) == realtime_tokens
    assert fake.bill.usd("realtime") > 0
    assert fake.bill.usd("batch") == pytest.approx(fake.bill.usd("realtime") / 2)
    assert fake.bill.usd() == pytest.approx(fake.bill.usd("realtime") * 1.5)


async def test_the_stats_count_the_batches_created_and_the_requests_in_them(
    fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    for custom_ids in (("a1", "a2"), ("b1",)):
        await ended(sdk, (await sdk.messages.batches.create(requests=requests(*custom_ids))).id)
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        stats = (await http.get("/_fake/stats")).json()
    assert (stats["batches"], stats["batch_requests"], stats["calls"]) == (2, 3, 0)
