"""The fake's bill of a streamed answer its client cut: final only once the server has seen the cut
(``settled``), and never carried into the next test's bill (``reset``). Both were races: a test that
read the bill as soon as its worker stopped could find the cut answer's output not billed yet (0 of
208 tokens), and an earlier test's cut answer billed late could land in the next test's bill (usage
413 tokens "under" it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.anthropic import FakeAnthropic

LONG = "Revenue grew in every region this quarter. " * 100


@pytest.fixture
async def http(fake_anthropic: FakeAnthropic) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=fake_anthropic.base_url, headers=headers, timeout=10) as client:
        yield client


async def cut_after(http: httpx.AsyncClient, deltas: int) -> None:
    """Streams an answer and hangs up after ``deltas`` text events, as a cancelled worker does."""
    body = {"model": "claude-haiku-4-5", "max_tokens": 2000, "stream": True}
    body["messages"] = [{"role": "user", "content": "a report, please"}]
    async with http.stream("POST", "/v1/messages", json=body) as response:
        seen = 0
        async for line in response.aiter_lines():
            seen += line == "event: content_block_delta"
            if seen == deltas:
                return


async def test_a_cut_answer_is_billed_once_the_server_sees_the_cut_and_settled_waits_for_it(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.reply, fake_anthropic.chunk_delay = (lambda body: LONG), 0.02
    fake_anthropic.settle_delay = 0.3  # the server sees the cut late, as under load
    await cut_after(http, deltas=5)
    billed_input, billed_output = fake_anthropic.billed_tokens
    assert billed_input > 0 and billed_output == 0  # the client is done; the bill is not final yet
    await fake_anthropic.settled()
    assert 5 * 4 <= fake_anthropic.billed_tokens[1] <= 8 * 4  # what was sent: 16 characters a chunk


async def test_an_answer_begun_before_a_reset_bills_nothing_into_the_bill_after_it(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.reply, fake_anthropic.chunk_delay = (lambda body: LONG), 0.02
    fake_anthropic.settle_delay = 0.3
    await cut_after(http, deltas=5)
    fake_anthropic.reset()  # the next test begins while the cut answer is still to be billed
    await fake_anthropic.settled()
    await asyncio.sleep(0.5)  # past the earlier answer's settle_delay: it has ended by now
    assert fake_anthropic.billed_tokens == (0, 0)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_call_that_arrived_before_a_reset_bills_nothing_after_it(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient, stream: bool
) -> None:
    """A request already in the server (recorded, waiting out its first byte's delay) when its test
    ends must not bill its input, or anything, into the next test's bill: the rushing test once
    found exactly one call's input (413 tokens) more in its bill than in its usage."""
    fake_anthropic.first_byte_delay = 0.3
    body = {"model": "claude-haiku-4-5", "max_tokens": 50, "stream": stream}
    body["messages"] = [{"role": "user", "content": "a report, please"}]
    call = asyncio.create_task(http.post("/v1/messages", json=body))
    while fake_anthropic.call_count == 0:  # arrived and recorded
        await asyncio.sleep(0.01)
    fake_anthropic.reset()  # the next test begins while the call waits for its first byte
    (await call).raise_for_status()
    await fake_anthropic.settled()
    assert fake_anthropic.billed_tokens == (0, 0)
