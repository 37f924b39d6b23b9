"""The batch adapter through the real SDK against the fake: the realtime prompt, outcomes classified
like realtime errors, cancel in time or too late, and finding a batch again from its intent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from service.core.errors import ProviderRejected, ProviderUnavailable
from service.providers.anthropic.batches import AnthropicBatches
from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.base import ReportRequest
from service.providers.batch import (
    Answered,
    BatchIntent,
    BatchOutcome,
    Canceled,
    Expired,
    Failed,
    Found,
    NotCreated,
    Undecided,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.providers.support import MODEL, request_for, settings_for


@pytest.fixture
async def batches(fake: FakeAnthropic) -> AsyncIterator[AnthropicBatches]:
    client = build_anthropic_client(settings_for(fake.base_url))
    yield AnthropicBatches(client)
    await client.close()


def jobs(*names: str) -> list[tuple[str, ReportRequest]]:
    return [(name, request_for(f"region,revenue\nMARKER-{name},1\n")) for name in names]


async def wait_ended(batches: AnthropicBatches, batch_id: str) -> None:
    deadline = time.monotonic() + 5
    while not (await batches.status(batch_id)).ended:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def outcomes(batches: AnthropicBatches, batch_id: str) -> dict[str, BatchOutcome]:
    await wait_ended(batches, batch_id)
    return {custom_id: outcome async for custom_id, outcome in batches.results(batch_id, MODEL)}


async def test_a_batch_request_carries_exactly_the_prompt_of_the_realtime_call(
    fake: FakeAnthropic, provider: AnthropicProvider, batches: AnthropicBatches
) -> None:
    (custom_id, request), *_ = jobs("job-1")
    await provider.write_report(request)
    realtime = fake.calls[0].body
    status = await batches.create([(custom_id, request)])
    ((sent_id, sent),) = fake.batches.requests(status.batch_id)
    assert sent_id == "job-1"
    assert {key: sent[key] for key in ("model", "max_tokens", "system", "messages")} == {
        key: realtime[key] for key in ("model", "max_tokens", "system", "messages")
    }
    assert "stream" not in sent
    assert (status.state, status.size, status.counts["processing"]) in {
        ("in_progress", 1, 1),
        ("ended", 1, 0),
    }


async def test_answers_come_back_with_text_model_tokens_and_the_message_id(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    status = await batches.create(jobs("job-1", "job-2"))
    results = await outcomes(batches, status.batch_id)
    assert set(results) == {"job-1", "job-2"}
    answered = results["job-2"]
    assert isinstance(answered, Answered)
    answer = answered.answer
    assert "MARKER-job-2" in answer.text and answer.model == MODEL
    assert answer.input_tokens > 0 and answer.output_tokens == len(answer.text) // 4
    assert (answer.cache_read_tokens, answer.cache_write_tokens) == (0, 0)
    assert answer.request_id.startswith("msg_")
    batch_tally = fake.bill.tokens("batch")
    billed = sum(r.answer.input_tokens for r in results.values() if isinstance(r, Answered))
    assert batch_tally.input_tokens == billed


async def test_errored_requests_are_classified_as_realtime_failures_would_be(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    fake.batches.fail("busy", "overloaded_error")
    fake.batches.fail("bad", "invalid_request_error", "max_tokens: too large for this model")
    fake.batches.fail("broke", "billing_error", "Your credit balance is too low")
    results = await outcomes(batches, (await batches.create(jobs("busy", "bad", "broke"))).batch_id)
    busy, bad, broke = results["busy"], results["bad"], results["broke"]
    assert isinstance(busy, Failed) and isinstance(busy.error, ProviderUnavailable)
    assert busy.error.status is None  # a batch error never pauses the realtime lane as a 429 does
    assert isinstance(bad, Failed) and isinstance(bad.error, ProviderRejected)
    assert "invalid (400): max_tokens: too large" in bad.error.reason
    assert isinstance(broke, Failed) and isinstance(broke.error, ProviderRejected)
    assert "spend limit or credit" in broke.error.reason


async def test_a_refusal_or_an_empty_answer_in_a_batch_is_judged_as_in_realtime(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    fake.stop_reason = "refusal"
    refused = (await outcomes(batches, (await batches.create(jobs("r"))).batch_id))["r"]
    fake.stop_reason, fake.reply = None, lambda body: ""
    empty = (await outcomes(batches, (await batches.create(jobs("e"))).batch_id))["e"]
    assert isinstance(refused, Failed) and isinstance(refused.error, ProviderRejected)
    assert isinstance(empty, Failed) and isinstance(empty.error, ProviderUnavailable)


async def test_a_cancel_in_time_cancels_what_is_left_and_a_late_one_says_so(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    fake.batches.duration = 1.2
    slow = await batches.create(jobs("s1", "s2", "s3"))
    await asyncio.sleep(0.6)  # s1 (0.4 s) is done, s2 (0.8 s) is not
    cancelled = await batches.cancel(slow.batch_id)
    assert cancelled.in_time and cancelled.status.cancel_requested
    results = await outcomes(batches, slow.batch_id)
    assert isinstance(results["s1"], Answered)
    assert isinstance(results["s2"], Canceled) and isinstance(results["s3"], Canceled)
    fake.batches.duration = 0
    quick = await batches.create(jobs("q1"))
    await wait_ended(batches, quick.batch_id)
    late = await batches.cancel(quick.batch_id)
    assert not late.in_time and late.status.ended and late.status.counts["succeeded"] == 1


async def test_requests_past_the_expiry_come_back_expired(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    fake.batches.duration, fake.batches.expires_after = 1.0, 0.3
    results = await outcomes(batches, (await batches.create(jobs("x1", "x2"))).batch_id)
    assert isinstance(results["x1"], Expired) and isinstance(results["x2"], Expired)


async def test_results_before_the_end_are_unavailable_and_an_unknown_batch_is_rejected(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    fake.batches.duration = 30
    status = await batches.create(jobs("w"))
    with pytest.raises(ProviderUnavailable, match="not ended"):
        [outcome async for outcome in batches.results(status.batch_id)]
    with pytest.raises(ProviderRejected, match="msgbatch_nope"):
        await batches.status("msgbatch_nope")


async def test_requests_no_batch_may_hold_are_refused_before_any_call(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    for bad in ([], jobs("a", "a"), jobs("has space"), jobs("x" * 65)):
        with pytest.raises(ValueError, match=r"custom ids|at least one"):
            await batches.create(bad)
    assert fake.batches.created == []


# --- finding a batch again --------------------------------------------------------------------------


def intent(*custom_ids: str, written: datetime | None = None) -> BatchIntent:
    return BatchIntent(custom_ids, written or datetime.now(UTC))


async def test_an_ended_batch_is_found_by_the_custom_ids_in_its_results(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    wanted = intent("f1", "f2")
    other = await batches.create(jobs("o1", "o2"))  # same size, same moment, other jobs
    ours = await batches.create(jobs("f1", "f2"))
    await wait_ended(batches, ours.batch_id)
    await wait_ended(batches, other.batch_id)
    assert await batches.find(wanted) == Found(ours.batch_id, verified=True)
    assert await batches.find(wanted, claimed={ours.batch_id}) == Undecided(())  # window still open
    later = datetime.now(UTC) + batches.create_window + timedelta(minutes=2)
    assert await batches.find(wanted, claimed={ours.batch_id}, now=later) == NotCreated()


async def test_a_batch_still_processing_is_found_by_size_and_time_unless_several_could_be_it(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    fake.batches.duration = 30
    wanted = intent("p1", "p2")
    first = await batches.create(jobs("p1", "p2"))
    await batches.create(jobs("p3"))  # another size: never a candidate
    assert await batches.find(wanted) == Found(first.batch_id, verified=False)
    second = await batches.create(jobs("q1", "q2"))
    assert await batches.find(wanted) == Undecided((second.batch_id, first.batch_id))
    assert await batches.find(wanted, claimed={second.batch_id}) == Found(first.batch_id, verified=False)


async def test_nothing_created_in_a_closed_window_means_the_batch_was_never_created(
    fake: FakeAnthropic, batches: AnthropicBatches
) -> None:
    long_ago = datetime.now(UTC) - batches.create_window - timedelta(minutes=5)
    await batches.create(jobs("n1", "n2"))  # created now: outside the old intent's window
    assert await batches.find(intent("n1", "n2", written=long_ago)) == NotCreated()
    assert await batches.find(intent("n1", "n2", written=datetime.now(UTC))) != NotCreated()
