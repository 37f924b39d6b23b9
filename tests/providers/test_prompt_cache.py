"""The system prompt marked for the prompt cache when it is long enough for the model, and what that
saves on a repeated prompt, measured with the fake's cache (reads and writes as the API reports
them) and priced by both the fake's bill and our price table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.prompt import SYSTEM_PROMPT, PromptCachePolicy, system_prompt_tokens
from service.telemetry.pricing import cost_usd
from tests.fakes.anthropic import FakeAnthropic
from tests.providers.support import MODEL, request_for, settings_for

PREFIX_TOKENS = len(SYSTEM_PROMPT) // 4  # what the fake counts for the system prompt


@pytest.fixture
async def caching(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    """A provider that marks the system prompt whatever its length, and a fake that caches any prefix."""
    fake.prompt_cache.minimum = lambda model: 0
    client = build_anthropic_client(settings_for(fake.base_url))
    yield AnthropicProvider(client, prompt_cache=PromptCachePolicy(min_tokens=0, min_tokens_haiku=0))
    await client.close()


def test_the_system_prompt_is_marked_only_from_the_model_s_minimum_length_on() -> None:
    length = system_prompt_tokens()
    policy = PromptCachePolicy(min_tokens=length, min_tokens_haiku=length + 1)
    assert policy.caches_system_prompt("claude-opus-4-7")
    assert not policy.caches_system_prompt("claude-haiku-4-5-20251001")
    # Today's system prompt is shorter than every model's minimum: the defaults never mark it.
    assert not PromptCachePolicy().caches_system_prompt("claude-opus-4-7")


async def test_a_marked_system_prompt_is_sent_as_one_cacheable_block(
    fake: FakeAnthropic, caching: AnthropicProvider
) -> None:
    await caching.write_report(request_for())
    await caching.count_input_tokens(request_for())
    assert fake.calls[0].body["system"] == [
        {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
    ]
    assert fake.count_calls == 1  # the token count accepts the same blocks


async def test_a_repeated_prompt_reads_the_prefix_its_first_call_wrote_and_costs_less(
    fake: FakeAnthropic, caching: AnthropicProvider
) -> None:
    first = await caching.write_report(request_for("a,b\n1,2\n"))
    second = await caching.write_report(request_for("a,b\n3,4\n"))
    assert (first.cache_write_tokens, first.cache_read_tokens) == (PREFIX_TOKENS, 0)
    assert (second.cache_write_tokens, second.cache_read_tokens) == (0, PREFIX_TOKENS)
    assert first.input_tokens == second.input_tokens > 0  # the rest of the prompt, uncached
    costs = [
        cost_usd(MODEL, a.input_tokens, a.output_tokens, a.cache_read_tokens, a.cache_write_tokens)
        for a in (first, second)
    ]
    assert sum(costs) == pytest.approx(fake.bill.usd("realtime"), rel=1e-9)  # both price lists agree
    uncached = cost_usd(MODEL, first.input_tokens + PREFIX_TOKENS, first.output_tokens)
    assert uncached - costs[1] == pytest.approx(PREFIX_TOKENS * 0.9 * 1.0 / 1_000_000)  # 90% of the prefix
    assert costs[0] - uncached == pytest.approx(PREFIX_TOKENS * 0.25 * 1.0 / 1_000_000)  # the write's 25%


async def test_the_prefix_is_written_again_once_the_cache_lifetime_has_passed(
    fake: FakeAnthropic, caching: AnthropicProvider
) -> None:
    fake.prompt_cache.ttl = 0.2
    await caching.write_report(request_for())
    await asyncio.sleep(0.3)
    late = await caching.write_report(request_for())
    assert (late.cache_write_tokens, late.cache_read_tokens) == (PREFIX_TOKENS, 0)


async def test_a_marked_prefix_shorter_than_the_model_s_minimum_is_served_uncached(
    fake: FakeAnthropic, caching: AnthropicProvider
) -> None:
    fake.prompt_cache.minimum = lambda model: PREFIX_TOKENS + 1
    answers = [await caching.write_report(request_for()) for _ in range(2)]
    assert [(a.cache_read_tokens, a.cache_write_tokens) for a in answers] == [(0, 0), (0, 0)]
    assert answers[0].input_tokens == fake.billed_tokens[0] // 2
