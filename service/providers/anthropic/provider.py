"""The model provider boundary: the Anthropic Messages API, streamed, and its errors in our terms.

This is the only module that imports ``anthropic``; the prompt text lives in ``service.providers.prompt``.
Everything it raises on purpose is a ``JobError``: ``ProviderUnavailable`` when another attempt may
succeed, ``ProviderRejected`` when it cannot. Prompts and input data are never logged, and no error
reason carries the API key or the input.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anthropic
import httpx2  # the SDK's transport: a stream cut mid-answer surfaces as its error, unwrapped
import orjson
from anthropic import AsyncAnthropic, AsyncStream

from service.core.errors import JobError, ProviderRejected, ProviderUnavailable
from service.core.settings import Settings
from service.providers.anthropic.stream import StreamedAnswer
from service.providers.prompt import SYSTEM_PROMPT, build_user_message

PROGRESS_INTERVAL_SECONDS = 0.25
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class ReportRequest:
    input_text: str  # decoded input, any size: the prompt builder truncates it to a budget
    input_name: str  # e.g. "sales.csv"
    content_type: str  # "text/csv", "application/json", "text/plain", or anything else
    model: str
    max_tokens: int


@dataclass(frozen=True)
class ReportAnswer:
    text: str  # Markdown
    model: str  # the model that answered, as the API named it
    input_tokens: int
    output_tokens: int
    offline: bool = False


# Hears the output tokens (estimated while streaming, real at the end) received so far.
OutputProgress = Callable[[int], Awaitable[None]]


class Provider(Protocol):
    async def write_report(
        self, request: ReportRequest, on_output: OutputProgress | None = None
    ) -> ReportAnswer:
        """Write the report; ``on_output`` hears the output tokens (estimated) received so far."""
        ...


class ProgressThrottle:
    """Passes running token counts on at most once per ``interval``, then the final count once."""

    def __init__(
        self,
        on_output: OutputProgress | None,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_output = on_output
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")

    async def update(self, tokens: int) -> None:
        now = self._clock()
        if self._on_output is not None and now - self._last >= self._interval:
            self._last = now
            await self._on_output(tokens)

    async def finish(self, tokens: int) -> None:
        if self._on_output is not None:
            await self._on_output(tokens)


# --- errors: vendor failures into our tree ------------------------------------------------------------

# The HTTP status each API error type comes with, for `error` events that arrive inside a 200 stream.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# `error.details.error_code` values meaning the account may not spend more until someone acts or the
# month turns: the API sends them with 429 (tier and contract caps) or 402, and retrying cannot help.
_SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)
# Without a code (older API versions, proxies, the Claude Code workspace's 429) only the text tells.
_SPEND_LIMIT_TEXT = re.compile(r"spend limit|usage limit|credit|billing|extra usage", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")
_RESET_HEADER = re.compile(r"anthropic-ratelimit-(.+)-reset")
_REJECTIONS = {
    400: "the model provider rejected the request as invalid (400)",
    401: "the model provider rejected the API key (401); check ANTHROPIC_API_KEY",
    402: "the model provider refused for a billing problem (402); check the account's billing",
    403: "the API key may not use this model or resource (403); check the key's workspace and permissions",
    404: "the model provider does not know the model {model} (404); check the configured model name",
    413: "the request was too large for the model provider (413)",
}


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's wait hint: ``retry-after(-ms)``, else the latest reset among the exhausted limits."""
    now = time.time() if now is None else now
    lowered = {name.lower(): value for name, value in headers.items()}
    explicit = _explicit_retry_after(lowered, now)
    if explicit is not None:
        return max(0.0, explicit)
    resets = [
        _rfc3339_timestamp(value)
        for name, value in lowered.items()
        if (match := _RESET_HEADER.fullmatch(name))
        and lowered.get(f"anthropic-ratelimit-{match.group(1)}-remaining", "").strip() == "0"
    ]
    known = [reset for reset in resets if reset is not None]
    return max(0.0, max(known) - now) if known else None


def _explicit_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(headers[name]) / scale
        except (KeyError, ValueError):
            continue
        if math.isfinite(seconds):  # "nan" and "inf" parse as floats but are no hint
            return seconds
    parsed = email.utils.parsedate_tz(headers.get("retry-after", ""))
    return None if parsed is None else email.utils.mktime_tz(parsed) - now


def _rfc3339_timestamp(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None


def translate_error(exc: Exception, model: str, secret: str | None = None) -> JobError:
    """Our error for a vendor failure; ``secret`` (the API key) is scrubbed from any text we pass on."""
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderUnavailable("the model provider did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderUnavailable("could not reach the model provider")
    if isinstance(exc, httpx2.TransportError):
        return ProviderUnavailable("the connection to the model provider dropped mid-answer")
    if isinstance(exc, anthropic.APIStatusError):
        return _translate_status(exc, model, secret)
    return ProviderUnavailable("the model provider's answer could not be read")


def _translate_status(exc: anthropic.APIStatusError, model: str, secret: str | None) -> JobError:
    mid_stream = exc.status_code < 400  # an `error` event after a 200: only its type says what went wrong
    status = _TYPE_STATUS.get(exc.type or "", 500) if mid_stream else exc.status_code
    if _is_spend_limit(exc, status):
        return ProviderRejected(
            "the model provider account cannot spend more (spend limit or credit reached); "
            f"raise the limit or add credit{_detail(exc, secret)}"
        )
    if status in (408, 409, 429) or status >= 500:
        if mid_stream:
            return ProviderUnavailable(f"the model provider failed mid-answer ({str(exc.type)[:40]})")
        hint = retry_after_seconds(exc.response.headers)
        return ProviderUnavailable(_unavailable_reason(status), retry_after=hint, status=status)
    reason = _REJECTIONS.get(status, f"the model provider refused the request ({status})")
    return ProviderRejected(reason.format(model=repr(model)) + _detail(exc, secret))


def _is_spend_limit(exc: anthropic.APIStatusError, status: int) -> bool:
    if exc.error_code is not None:
        return exc.error_code in _SPEND_LIMIT_CODES  # a stable code wins over the wording
    return status in (400, 402, 429) and bool(_SPEND_LIMIT_TEXT.search(exc.api_message or ""))


def _unavailable_reason(status: int) -> str:
    if status == 429:
        return "the model provider asked us to slow down (429)"
    if status == 529:
        return "the model provider is overloaded (529)"
    if status in (408, 504):
        return f"the model provider timed out ({status})"
    return f"the model provider failed ({status})"


def _detail(exc: anthropic.APIStatusError, secret: str | None) -> str:
    """The provider's own message, one line, capped, with anything key-like scrubbed; and the request id."""
    message = " ".join((exc.api_message or "").split())[:200]
    if secret:
        message = message.replace(secret, "[redacted]")
    message = _KEY_LIKE.sub("[redacted]", message)
    request_id = f" (request {exc.request_id})" if exc.request_id else ""
    return f": {message}{request_id}" if message else request_id


def finished_answer(streamed: StreamedAnswer) -> ReportAnswer:
    """The report in a finished answer, or the error an unusable one means.

    An empty answer after a normal stop is ``ProviderUnavailable``: sampling differs between attempts, so
    another one may write the report, and the job layer bounds how many we pay for. A refusal, or output
    cut by ``max_tokens`` before any text, would come out the same way again: ``ProviderRejected``.
    """
    text = streamed.text
    if streamed.stop_reason is None:
        raise ProviderUnavailable("the model provider's answer ended before it was complete")
    if streamed.stop_reason == "refusal":
        raise ProviderRejected("the model declined to write this report")
    if not text.strip():
        if streamed.stop_reason == "max_tokens":
            raise ProviderRejected("the model ran out of output tokens before writing anything")
        raise ProviderUnavailable("the model provider returned an empty answer")
    return ReportAnswer(text, streamed.model, streamed.input_tokens, streamed.output_tokens)


# --- the client and the provider --------------------------------------------------------------------


def build_anthropic_client(settings: Settings) -> AsyncAnthropic:
    """The SDK client for the worker, built once at start-up.

    ``max_retries=0``: our job layer owns retries and backoff. SDK retries inside each job attempt would
    multiply with the job's attempts (3 x 3 paid calls instead of 3) and hide the provider's
    ``retry-after`` from the scheduler. ``base_url=None`` keeps the SDK default, which honours
    ``ANTHROPIC_BASE_URL``.
    """
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key is not None else ""
    if not key:
        raise ValueError("no Anthropic API key is configured: use the offline provider instead")
    seconds = settings.llm_timeout_seconds
    timeout = anthropic.Timeout(seconds, connect=min(10.0, seconds))
    return AsyncAnthropic(api_key=key, base_url=settings.anthropic_base_url, timeout=timeout, max_retries=0)


class AnthropicProvider:
    """Writes reports with Claude: one streamed Messages API call per ``write_report``."""

    def __init__(self, client: AsyncAnthropic) -> None:
        self._client = client
        timeout = client.timeout
        # The client's timeouts bound each wait; this bounds the whole call, trickling streams included.
        self._deadline = timeout.read if isinstance(timeout, anthropic.Timeout) else timeout

    async def write_report(
        self, request: ReportRequest, on_output: OutputProgress | None = None
    ) -> ReportAnswer:
        progress = ProgressThrottle(on_output)
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                streamed = await self._stream(request, progress)
        except (anthropic.APIError, httpx2.TransportError) as exc:
            raise translate_error(exc, request.model, self._client.api_key) from exc
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # not ours: a caller's timeout, or one raised by ``on_output``
            raise ProviderUnavailable("the model provider did not finish in time") from exc
        answer = finished_answer(streamed)
        await progress.finish(answer.output_tokens)
        return answer

    async def _stream(self, request: ReportRequest, progress: ProgressThrottle) -> StreamedAnswer:
        prompt = build_user_message(request.input_text, request.input_name, request.content_type)
        stream = await self._client.messages.create(
            model=request.model,
            max_tokens=request.max_tokens,
            system=SYSTEM_PROMPT,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
        )
        streamed = StreamedAnswer()
        try:
            # The raw events, not the SDK's typed ones: see service.providers.anthropic.stream for why.
            async for sse in AsyncStream.raw_events(stream.response):
                if sse.event == "error":
                    body = _json_or_text(sse.data)
                    raise anthropic.APIStatusError(f"{body}", response=stream.response, body=body)
                streamed.feed(sse.event, sse.data)
                await progress.update(streamed.characters // CHARS_PER_TOKEN)
        finally:
            await stream.close()
        return streamed


def _json_or_text(data: str) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data


def request_input_tokens(request: ReportRequest) -> int:
    """The input a request will be counted for, estimated before the call to reserve rate-limit room.

    Three characters a token rather than four: real tokenizers count more tokens than that for data
    (digits, punctuation), and an estimate on the high side is given back when the call ends.
    """
    message = build_user_message(request.input_text, request.input_name, request.content_type)
    return (len(SYSTEM_PROMPT) + len(message)) // 3 + 1
