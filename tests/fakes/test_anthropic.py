"""The fake Anthropic API enforces rate limits like the real one: buckets, 429s, headers, refill, storms."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from service.core.errors import ProviderUnavailable
from service.core.settings import Settings
from service.providers.anthropic.provider import AnthropicProvider, build_anthropic_client
from service.providers.base import ReportRequest
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic_limits import FakeLimits
from tests.fakes.anthropic_wire import estimate_tokens, prompt_text

API_KEY = "sk-ant-test-fake-limits"
MODEL = "claude-test"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.reset()
    return server


@pytest.fixture
async def http(fake: FakeAnthropic) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers=headers, timeout=30, limits=limits
    ) as client:
        yield client


def body(input_tokens: int = 10, max_tokens: int = 100, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    """A request whose input counts exactly ``input_tokens`` (4 characters a token, no system prompt)."""
    messages = [{"role": "user", "content": "x" * (4 * input_tokens)}]
    return {"model": model, "max_tokens": max_tokens, "messages": messages, **extra}


async def post(http: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await http.post("/v1/messages", json=body(**fields))


def seconds_until(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp() - time.time()


async def test_the_sdk_sees_a_429_with_retry_after_once_over_the_request_limit(fake: FakeAnthropic) -> None:
    fake.limits = FakeLimits(requests_per_minute=2)
    settings = Settings(anthropic_api_key=API_KEY, anthropic_base_url=fake.base_url, _env_file=None)
    client = build_anthropic_client(settings)
    provider = AnthropicProvider(client)
    request = ReportRequest("a,b\n1,2\n", "t.csv", "text/csv", MODEL, max_tokens=500)
    try:
        for _ in range(2):
            assert (await provider.write_report(request)).text
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.write_report(request)
    finally:
        await client.close()
    assert caught.value.status == 429
    assert caught.value.retry_after == 30  # one request comes back every 30 s, in whole seconds
    assert (fake.call_count, fake.rate_limited_count) == (3, 1)


async def test_answers_carry_the_remaining_limits(fake: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake.limits = FakeLimits(50, 10_000, 2_000)
    first = await post(http, input_tokens=1000, max_tokens=500)
    second = await post(http, input_tokens=1000, max_tokens=500)
    assert first.status_code == second.status_code == 200
    h = second.headers
    assert (h["anthropic-ratelimit-requests-limit"], h["anthropic-ratelimit-requests-remaining"]) == (
        "50",
        "48",
    )
    assert h["anthropic-ratelimit-input-tokens-limit"] == "10000"
    # Refilled a little between the two calls (10,000 a minute: 167 a second, on a busy machine too).
    assert 8000 <= int(h["anthropic-ratelimit-input-tokens-remaining"]) <= 8100
    # The first answer's real output replaced its 500-token reservation; the second's is still held.
    used = first.json()["usage"]["output_tokens"]
    assert 2000 - used - 500 <= int(h["anthropic-ratelimit-output-tokens-remaining"]) <= 2000 - used - 499
    assert h["anthropic-ratelimit-tokens-limit"] == "2000"  # the tighter of the token limits
    assert 0 < seconds_until(h["anthropic-ratelimit-input-tokens-reset"]) <= 12.1  # 2000 tokens at 166/s
    assert 0 < seconds_until(h["anthropic-ratelimit-requests-reset"]) <= 2.5


async def test_a_429_says_which_limit_and_how_long(fake: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake.limits = FakeLimits(input_tokens_per_minute=600)  # 10 tokens a second
    assert (await post(http, input_tokens=500)).status_code == 200
    refused = await post(http, input_tokens=300)  # 200 short: 20 s
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "600 input tokens per minute" in refused.json()["error"]["message"]
    h = refused.headers
    assert h["retry-after"] == "20" and h["x-should-retry"] == "true"
    assert h["anthropic-ratelimit-input-tokens-remaining"] == "100"
    assert 49 < seconds_until(h["anthropic-ratelimit-input-tokens-reset"]) <= 50.1
    assert fake.rate_limited_count == 1
    assert (await post(http, input_tokens=100)).status_code == 200  # the refused call took nothing


async def test_output_is_reserved_from_max_tokens_until_the_answer_ends(
    fake: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake.limits = FakeLimits(output_tokens_per_minute=1000)
    fake.first_byte_delay = 0.3
    slow = asyncio.create_task(post(http, max_tokens=600, stream=True))
    while fake.call_count < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert (await post(http, max_tokens=600)).status_code == 429  # 600 + 600 > 1000 while it runs
    answered = await slow
    assert answered.status_code == 200 and "message_stop" in answered.text
    # It really produced about 150 tokens, so 600 fit again once it ended.
    assert (await post(http, max_tokens=600)).status_code == 200


async def test_buckets_refill_continuously(fake: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake.limits = FakeLimits(input_tokens_per_minute=6000)  # 100 tokens a second
    assert (await post(http, input_tokens=5900)).status_code == 200
    refused = await post(http, input_tokens=200)
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    await asyncio.sleep(1.05)
    assert (await post(http, input_tokens=200)).status_code == 200


async def test_models_are_limited_apart(fake: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake.limits = FakeLimits(requests_per_minute=1)
    assert (await post(http, model="claude-a")).status_code == 200
    assert (await post(http, model="claude-a")).status_code == 429
    assert (await post(http, model="claude-b")).status_code == 200


async def test_a_request_larger_than_a_limit_goes_through_when_the_bucket_is_full(
    fake: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake.limits = FakeLimits(input_tokens_per_minute=100)
    assert (await post(http, input_tokens=400)).status_code == 200
    refused = await post(http, input_tokens=1)  # 300 in debt, then 1 more: 301 tokens at 100 a minute
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "181")


async def test_a_storm_answers_n_overloaded_then_recovers(
    fake: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake.storm(2, status=529, retry_after="3")
    queued = await http.post("/_fake/storm", json={"count": 1, "status": 429, "retry_after": 4})
    assert queued.json() == {"queued": 1}
    answers = [await post(http) for _ in range(4)]
    assert [a.status_code for a in answers] == [529, 529, 429, 200]
    assert [a.headers.get("retry-after") for a in answers[:3]] == ["3", "3", "4"]
    stats = (await http.get("/_fake/stats")).json()
    assert (stats["calls"], stats["rate_limited"]) == (4, 0)  # scripted 429s are not limit refusals
    assert (stats["billed_input"], stats["billed_output"]) == fake.billed_tokens  # only the 200 billed


async def test_reset_refills_and_restores_no_limits(fake: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake.limits = FakeLimits(requests_per_minute=1)
    await post(http)
    assert (await post(http)).status_code == 429
    fake.reset()
    assert fake.rate_limited_count == 0
    assert [(await post(http)).status_code for _ in range(3)] == [200, 200, 200]


async def stream_over_raw_http(port: int) -> bytes:
    """One streamed call on its own connection; plain asyncio, as httpx's pool is itself slow past
    a few hundred connections and would hide what the server does."""
    payload = json.dumps(body(stream=True)).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: fake\r\nx-api-key: {API_KEY}\r\n"
        f"content-type: application/json\r\nconnection: close\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + payload)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_a_thousand_slow_streams_run_at_once(fake: FakeAnthropic) -> None:
    fake.first_byte_delay, fake.chunk_delay, fake.chunk_chars = 1.0, 0.02, 200  # ~1.1 s each
    port = int(fake.base_url.rsplit(":", 1)[1])
    started = time.monotonic()
    answers = await asyncio.gather(*(stream_over_raw_http(port) for _ in range(1000)))
    elapsed = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 200") and b"message_stop" in a for a in answers)
    assert elapsed < 10, f"1000 streams of ~1.1 s took {elapsed:.1f}s: something blocks the server"


def test_the_counted_input_is_the_prompt_text() -> None:
    assert estimate_tokens(prompt_text(body(input_tokens=123))) == 123


def test_the_command_line_serves_with_limits() -> None:
    command = [sys.executable, "-m", "tests.fakes.anthropic_cli", "--rpm", "1", "--reply-tokens", "50"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
            headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
            with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
                first = client.post("/v1/messages", json=body())
                assert first.status_code == 200 and first.json()["usage"]["output_tokens"] == 50
                assert client.post("/v1/messages", json=body()).status_code == 429
                stats = client.get("/_fake/stats").json()
                assert (stats["calls"], stats["rate_limited"]) == (2, 1)
        finally:
            process.terminate()
