"""The Anthropic provider through the real SDK against the fake API: answers, progress, errors, the prompt."""

from __future__ import annotations

import itertools
import socket
import time

import pytest

from service.core.errors import ProviderRejected, ProviderUnavailable
from service.core.settings import Settings
from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.base import PROGRESS_INTERVAL_SECONDS, CallUsage
from service.providers.prompt import (
    INPUT_BUDGET_CHARS,
    SYSTEM_PROMPT,
)
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_wire import prompt_text
from tests.providers.support import API_KEY, MODEL, Recorder, request_for, settings_for

# --- answers ---------------------------------------------------------------------------------------


async def test_text_and_usage_come_back_from_the_streamed_answer(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    answer = await provider.write_report(request_for())
    call = fake.calls[0]
    assert "MARKER-csv42" in answer.text
    assert answer.text.startswith("# Executive report")
    assert answer.model == MODEL
    assert answer.input_tokens == len(prompt_text(call.body)) // 4
    assert answer.output_tokens == len(answer.text) // 4
    assert answer.offline is False


async def test_the_answer_names_the_model_the_api_says_answered(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.served_model = "claude-haiku-4-5-20990101"
    answer = await provider.write_report(request_for())
    assert answer.model == "claude-haiku-4-5-20990101"


async def test_the_request_carries_model_max_tokens_prompt_and_key(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    await provider.write_report(request_for(model="claude-opus-4-7", max_tokens=321))
    call = fake.calls[0]
    assert call.body["model"] == "claude-opus-4-7"
    assert call.body["max_tokens"] == 321
    assert call.body["stream"] is True
    assert call.body["system"] == SYSTEM_PROMPT
    assert [message["role"] for message in call.body["messages"]] == ["user"]
    assert "MARKER-csv42" in call.body["messages"][0]["content"]
    assert call.api_key == API_KEY
    assert "anthropic-version" in call.headers


async def test_on_output_hears_rising_estimates_at_most_once_an_interval_then_the_real_count(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.reply = lambda body: "Revenue grew. " * 90  # 1,260 characters: 79 chunks of 16
    fake.chunk_delay = 0.035  # 79 chunks: between two and three intervals of streaming
    heard = Recorder()
    started = time.monotonic()
    answer = await provider.write_report(request_for(), heard)
    elapsed = time.monotonic() - started
    assert len(heard.calls) >= 3
    assert heard.counts == sorted(heard.counts)
    assert heard.counts[-1] == answer.output_tokens
    assert heard.finals == [heard.calls[-1][1]]
    assert heard.calls[0][1].input_tokens == answer.input_tokens > 0  # known from the first event on
    assert {usage.request_id for _, usage in heard.calls} == {answer.request_id}
    assert answer.request_id.startswith("req_")
    estimates = [at for at, _ in heard.calls[:-1]]
    interval = PROGRESS_INTERVAL_SECONDS
    assert all(later - earlier >= interval - 0.01 for earlier, later in itertools.pairwise(estimates))
    assert len(heard.calls) <= elapsed / interval + 2


async def test_an_empty_answer_is_worth_another_attempt(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.reply = lambda body: "   \n"
    with pytest.raises(ProviderUnavailable, match="empty"):
        await provider.write_report(request_for())


async def test_a_refusal_is_rejected(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.stop_reason = "refusal"
    with pytest.raises(ProviderRejected, match="declined"):
        await provider.write_report(request_for())


async def test_an_answer_cut_by_max_tokens_is_returned_as_is(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    answer = await provider.write_report(request_for(max_tokens=10))
    assert len(answer.text) == 40


async def test_a_large_input_is_truncated_in_the_prompt_and_the_prompt_says_so(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    big = "MARKER-head\n" + "row,1\n" * 100_000  # 600 KB
    await provider.write_report(request_for(big))
    content = fake.calls[0].body["messages"][0]["content"]
    assert len(content) < INPUT_BUDGET_CHARS + 2_000
    assert "MARKER-head" in content
    assert "truncated" in content
    assert f"of {len(big):,} characters" in content


# --- errors: one HTTP call each, mapped into our tree -------------------------------------------------


async def test_an_unreachable_provider_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = build_anthropic_client(settings_for(f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(ProviderUnavailable, match="could not reach"):
            await AnthropicProvider(client).write_report(request_for())
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("first_byte_delay", "chunk_delay"),
    [pytest.param(3.0, 0.0, id="before-the-first-byte"), pytest.param(0.0, 3.0, id="stalled-mid-stream")],
)
async def test_a_provider_slower_than_the_timeout_is_unavailable(
    fake: FakeAnthropic, first_byte_delay: float, chunk_delay: float
) -> None:
    fake.first_byte_delay, fake.chunk_delay = first_byte_delay, chunk_delay
    client = build_anthropic_client(settings_for(fake.base_url, llm_timeout_seconds=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailable, match="in time"):
            await AnthropicProvider(client).write_report(request_for())
    finally:
        await client.close()
    assert time.monotonic() - started < 2.0


async def test_a_trickling_stream_is_cut_at_the_timeout_for_the_whole_call(fake: FakeAnthropic) -> None:
    fake.chunk_delay = 0.1  # each wait is short, but the whole answer would take ~5 s
    fake.reply = lambda body: "x" * 800
    client = build_anthropic_client(settings_for(fake.base_url, llm_timeout_seconds=0.6))
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailable, match="did not finish in time"):
            await AnthropicProvider(client).write_report(request_for())
    finally:
        await client.close()
    assert time.monotonic() - started < 2.0


async def test_errors_raised_by_on_output_are_not_blamed_on_the_provider(provider: AnthropicProvider) -> None:
    async def failing(usage: CallUsage) -> None:
        raise TimeoutError("the job store timed out")

    with pytest.raises(TimeoutError, match="job store"):
        await provider.write_report(request_for(), failing)


# --- the client ----------------------------------------------------------------------------------------


async def test_the_client_never_retries_and_uses_the_configured_timeout_and_url() -> None:
    client = build_anthropic_client(settings_for("http://127.0.0.1:9/", llm_timeout_seconds=42))
    try:
        assert client.max_retries == 0
        assert str(client.base_url) == "http://127.0.0.1:9/"
        assert getattr(client.timeout, "read", None) == 42
        assert client.api_key == API_KEY
    finally:
        await client.close()


async def test_without_a_base_url_the_sdk_default_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/from-env")
    client = build_anthropic_client(Settings(anthropic_api_key=API_KEY, _env_file=None))
    try:
        assert str(client.base_url).startswith("http://127.0.0.1:9/from-env")
    finally:
        await client.close()


def test_building_a_client_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="offline"):
        build_anthropic_client(Settings(anthropic_api_key=None, _env_file=None))


# --- pure pieces -----------------------------------------------------------------------------------------
