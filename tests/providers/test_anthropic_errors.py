"""The provider's failures in our terms, after exactly one HTTP call each: statuses, error events
mid-stream, dropped connections, and the wait hints (retry-after, ratelimit resets) and their cap."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from service.core.errors import ProviderRejected, ProviderUnavailable
from service.providers.anthropic.errors import MAX_PAUSE_SECONDS, retry_after_seconds
from service.providers.anthropic.provider import AnthropicProvider
from tests.fakes import anthropic_errors as fa
from tests.fakes.anthropic import FakeAnthropic
from tests.providers.support import API_KEY, MODEL, Recorder, request_for

ERROR_CASES = [
    pytest.param(fa.overloaded("3"), ProviderUnavailable, 529, 3.0, id="529-overloaded-with-retry-after"),
    pytest.param(fa.overloaded(), ProviderUnavailable, 529, None, id="529-overloaded-without-hint"),
    pytest.param(fa.server_error(), ProviderUnavailable, 500, None, id="500-api-error"),
    pytest.param(fa.rate_limited("7"), ProviderUnavailable, 429, 7.0, id="429-rate-limit"),
    pytest.param(
        fa.HttpFailure(
            429, "rate_limit_error", "Ramp limit", retry_after="5", error_code="ramp_limit_exceeded"
        ),
        ProviderUnavailable,
        429,
        5.0,
        id="429-ramp-limit-is-transient",
    ),
    pytest.param(
        fa.tier_spend_limit_reached(), ProviderRejected, None, None, id="429-tier-spend-cap-by-code"
    ),
    pytest.param(fa.usage_limit_429(), ProviderRejected, None, None, id="429-usage-limit-by-message"),
    pytest.param(
        fa.HttpFailure(429, "rate_limit_error", "Extra usage is required for long context requests."),
        ProviderRejected,
        None,
        None,
        id="429-credit-required-by-message",
    ),
    pytest.param(fa.usage_limit_400(), ProviderRejected, None, None, id="400-own-spend-limit"),
    pytest.param(fa.bad_request(), ProviderRejected, None, None, id="400-invalid-request"),
    pytest.param(fa.invalid_api_key(), ProviderRejected, None, None, id="401-bad-key"),
    pytest.param(fa.permission_denied(), ProviderRejected, None, None, id="403-permission"),
    pytest.param(fa.model_not_found(MODEL), ProviderRejected, None, None, id="404-unknown-model"),
    pytest.param(fa.request_too_large(), ProviderRejected, None, None, id="413-too-large"),
]


@pytest.mark.parametrize(("failure", "expected", "status", "retry_after"), ERROR_CASES)
async def test_http_errors_map_to_our_tree_after_exactly_one_call(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    failure: fa.HttpFailure,
    expected: type[Exception],
    status: int | None,
    retry_after: float | None,
) -> None:
    fake.fail_next(failure)
    with pytest.raises(expected) as caught:
        await provider.write_report(request_for())
    assert fake.call_count == 1  # max_retries=0: the SDK retried nothing, not even 429 and 5xx
    assert caught.value.__cause__ is not None
    if isinstance(caught.value, ProviderUnavailable):
        assert caught.value.status == status
        assert caught.value.retry_after == retry_after
        assert not caught.value.mid_answer  # refused before any answer: an attempt's ordinary failure


async def test_rejections_say_what_to_fix(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    expectations = [
        (fa.invalid_api_key(), "API key (401)"),
        (fa.model_not_found(MODEL), f"model '{MODEL}' (404)"),
        (fa.tier_spend_limit_reached(), "spend limit"),
        (fa.usage_limit_400(), "spend limit"),
        (fa.request_too_large(), "too large"),
    ]
    for failure, words in expectations:
        fake.fail_next(failure)
        with pytest.raises(ProviderRejected) as caught:
            await provider.write_report(request_for())
        assert words in caught.value.reason


async def test_reasons_never_carry_the_api_key_or_the_input(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.fail_next(fa.HttpFailure(401, "authentication_error", f"invalid x-api-key {API_KEY}"))
    with pytest.raises(ProviderRejected) as caught:
        await provider.write_report(request_for())
    assert API_KEY not in caught.value.reason
    assert "[redacted]" in caught.value.reason
    assert "MARKER-csv42" not in caught.value.reason


async def test_a_429_without_retry_after_takes_the_hint_from_the_exhausted_limits_reset(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.fail_next(fa.rate_limited(retry_after=None, reset_in=30))
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.write_report(request_for())
    assert caught.value.retry_after is not None
    assert 27 <= caught.value.retry_after <= 30


async def test_an_error_event_mid_stream_is_unavailable(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.fail_next(fa.StreamFailure(after_chunks=3, error_type="overloaded_error", message="Overloaded"))
    heard = Recorder()
    with pytest.raises(ProviderUnavailable, match="mid-answer") as caught:
        await provider.write_report(request_for(), heard)
    assert caught.value.status == 529  # the HTTP status was 200; the event's type says what failed
    assert caught.value.mid_answer  # billed, and retried by the job without spending an attempt
    assert heard.counts  # progress had started
    assert fake.call_count == 1


async def test_an_invalid_request_error_event_mid_stream_is_rejected(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.fail_next(fa.StreamFailure(after_chunks=1, error_type="invalid_request_error", message="bad"))
    with pytest.raises(ProviderRejected):
        await provider.write_report(request_for())


async def test_a_connection_dropped_mid_stream_is_unavailable(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.fail_next(fa.Disconnect(after_chunks=3))
    with pytest.raises(ProviderUnavailable, match="dropped") as caught:
        await provider.write_report(request_for())
    assert caught.value.mid_answer
    assert fake.call_count == 1


async def test_after_a_failure_the_next_call_succeeds_with_one_more_http_call(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.fail_next(fa.overloaded())
    with pytest.raises(ProviderUnavailable):
        await provider.write_report(request_for())
    answer = await provider.write_report(request_for())
    assert "MARKER-csv42" in answer.text
    assert fake.call_count == 2


def test_retry_after_reads_ms_then_seconds_then_a_date() -> None:
    now = 1_000_000.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}, now) == 1.5
    assert retry_after_seconds({"Retry-After": "12"}, now) == 12.0
    assert retry_after_seconds({"retry-after": formatdate(now + 20, usegmt=True)}, now) == 20.0
    assert retry_after_seconds({"retry-after": formatdate(now - 20, usegmt=True)}, now) == 0.0
    for nonsense in ("-5", "soon", "\u00b2", "\u0663", "1e3", "nan"):
        assert retry_after_seconds({"retry-after": nonsense, "retry-after-ms": nonsense}, now) is None
    assert retry_after_seconds({}, now) is None


def test_a_retry_after_of_a_day_pauses_the_fleet_for_a_minute_at_most() -> None:
    now = 1_000_000.0
    assert retry_after_seconds({"retry-after": "86400"}, now) == MAX_PAUSE_SECONDS
    assert retry_after_seconds({"retry-after-ms": "86400000"}, now) == MAX_PAUSE_SECONDS
    assert (
        retry_after_seconds({"retry-after": formatdate(now + 86400, usegmt=True)}, now) == MAX_PAUSE_SECONDS
    )
    exhausted = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
    }
    assert retry_after_seconds(exhausted, now) == MAX_PAUSE_SECONDS


def test_retry_after_falls_back_to_the_latest_reset_among_exhausted_limits_only() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:30Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:45Z",
        "anthropic-ratelimit-input-tokens-remaining": "5000",
        "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:15:00Z",
    }
    assert retry_after_seconds(headers, now) == 25.0
    headers["anthropic-ratelimit-requests-remaining"] = headers[
        "anthropic-ratelimit-output-tokens-remaining"
    ] = "9"
    assert retry_after_seconds(headers, now) is None
