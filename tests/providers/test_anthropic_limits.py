"""The provider's rate-limit headers reach the caller without the SDK: on a streamed answer from its
first event on, and on a 429; read as ASCII digits and RFC 3339 resets, anything else ignored."""

from __future__ import annotations

import pytest

from service.core.errors import ProviderUnavailable
from service.core.ratelimit import LimitReading
from service.providers.anthropic.errors import provider_limits
from service.providers.anthropic.provider import AnthropicProvider
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_limits import FakeLimits
from tests.providers.support import Recorder, request_for


async def test_a_streamed_answer_hands_up_the_readings_from_its_first_event(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.limits = FakeLimits(requests_per_minute=50, input_tokens_per_minute=60_000)
    heard = Recorder()
    answer = await provider.write_report(request_for(), heard)
    first = heard.calls[0][1].limits
    assert first is not None and first == answer.limits
    assert first.requests is not None and first.input_tokens is not None and first.output_tokens is not None
    assert (first.requests.limit, first.requests.remaining) == (50, 49)
    assert first.input_tokens.limit == 60_000
    assert first.input_tokens.remaining == 60_000 - answer.input_tokens
    # Full again at 1,000 tokens a second: as many seconds as thousands were taken.
    assert first.input_tokens.reset_in == pytest.approx(answer.input_tokens / 1000, abs=0.1)


async def test_a_429_carries_the_readings_of_the_limit_it_ran_into(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.limits = FakeLimits(requests_per_minute=1)
    await provider.write_report(request_for())
    with pytest.raises(ProviderUnavailable) as refused:
        await provider.write_report(request_for())
    limits = refused.value.limits
    assert refused.value.status == 429 and limits is not None and limits.requests is not None
    assert (limits.requests.limit, limits.requests.remaining) == (1, 0)
    assert 55 < limits.requests.reset_in <= 60


def test_only_well_formed_readings_are_taken() -> None:
    wall = 1_700_000_000.0
    headers = {
        "Anthropic-RateLimit-Input-Tokens-Limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "12000",
        "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:50Z",  # 30 s after ``wall``
        "anthropic-ratelimit-output-tokens-limit": "²000",
        "anthropic-ratelimit-output-tokens-remaining": "1000",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:50Z",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "soon",
    }
    limits = provider_limits(headers, wall=wall, mono=5.0)
    assert limits is not None
    assert limits.input_tokens == LimitReading(80_000, 12_000, 30.0)
    assert (limits.requests, limits.output_tokens, limits.read_at) == (None, None, 5.0)
    assert provider_limits({"request-id": "req_1"}) is None
