"""Claude writes the report: the Anthropic Messages API, streamed, through the official SDK.

The prompt text lives in ``service.providers.prompt`` and vendor errors are translated in
``service.providers.anthropic.errors``: everything this raises on purpose is a ``JobError``. Prompts
and input data are never logged, and no error reason carries the API key or the input.
"""

from __future__ import annotations

import asyncio

import anthropic
import httpx2  # the SDK's transport: a stream cut mid-answer surfaces as its error, unwrapped
import orjson
from anthropic import AsyncAnthropic, AsyncStream
from anthropic.types import TextBlockParam
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

from service.core.errors import ProviderRejected, ProviderUnavailable
from service.core.settings import Settings
from service.providers.anthropic.errors import provider_limits, translate_error
from service.providers.anthropic.stream import StreamedAnswer
from service.providers.base import ProgressThrottle, ReportAnswer, ReportRequest, UsageListener
from service.providers.prompt import (
    SYSTEM_PROMPT,
    PromptCachePolicy,
    build_user_message,
    input_tokens_upper_bound,
)

# Counting tokens is a small free call: if it is slow, the upper bound will do.
COUNT_TIMEOUT_SECONDS = 10.0


def finished_answer(streamed: StreamedAnswer) -> ReportAnswer:
    """The report in a finished answer, or the error an unusable one means.

    An empty answer after a normal stop is ``ProviderUnavailable``: sampling differs between attempts, so
    another one may write the report, and the job layer bounds how many we pay for. A refusal, or output
    cut by ``max_tokens`` before any text, would come out the same way again: ``ProviderRejected``.
    """
    text = streamed.text
    if streamed.stop_reason is None:
        raise ProviderUnavailable("the model provider's answer ended before it was complete", mid_answer=True)
    if streamed.stop_reason == "refusal":
        raise ProviderRejected("the model declined to write this report")
    if not text.strip():
        if streamed.stop_reason == "max_tokens":
            raise ProviderRejected("the model ran out of output tokens before writing anything")
        raise ProviderUnavailable("the model provider returned an empty answer")
    return ReportAnswer(
        text,
        streamed.model,
        streamed.input_tokens,
        streamed.output_tokens,
        request_id=streamed.request_id,
        cache_read_tokens=streamed.cache_read_tokens,
        cache_write_tokens=streamed.cache_write_tokens,
        limits=streamed.limits,
        output_limit_reached=streamed.stop_reason == "max_tokens",
    )


def build_anthropic_client(settings: Settings) -> AsyncAnthropic:
    """The SDK client for the worker, built once at start-up.

    ``max_retries=0``: our job layer owns retries and backoff. SDK retries inside each job attempt would
    multiply with the job's attempts (3 x 3 paid calls instead of 3) and hide the provider's
    ``retry-after`` from the scheduler. ``base_url=None`` keeps the SDK default, which honours
    ``ANTHROPIC_BASE_URL``.

    ``open_telemetry=False``: the model call's span is ours (``service.worker.model_call``), and its
    ``traceparent`` goes with the request. The SDK's own span would be a second one for the same call,
    and without ``gen_ai.usage.*`` or the response's model, which it reads from the SDK's typed
    stream, not the raw events we read (see ``stream.py``); off, it also costs nothing per call.
    """
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key is not None else ""
    if not key:
        raise ValueError("no Anthropic API key is configured: use the offline provider instead")
    seconds = settings.llm_timeout_seconds
    timeout = anthropic.Timeout(seconds, connect=min(10.0, seconds))
    return AsyncAnthropic(
        api_key=key,
        base_url=settings.anthropic_base_url,
        timeout=timeout,
        max_retries=0,
        open_telemetry=False,
    )


class AnthropicProvider:
    """Writes reports with Claude: one streamed Messages API call per ``write_report``.

    ``prompt_cache`` says when the system prompt is marked for the provider's prompt cache (by
    default from the models' documented minimums; ``PromptCachePolicy.from_settings`` follows the
    configuration)."""

    def __init__(self, client: AsyncAnthropic, *, prompt_cache: PromptCachePolicy | None = None) -> None:
        self._client = client
        self._cache = prompt_cache or PromptCachePolicy()
        timeout = client.timeout
        # The client's timeouts bound each wait; this bounds the whole call, trickling streams included.
        self._deadline = timeout.read if isinstance(timeout, anthropic.Timeout) else timeout

    async def count_input_tokens(self, request: ReportRequest) -> int:
        """The provider's own count (its free token-counting endpoint); if that fails, an upper
        bound: a token is never less than one byte of the prompt, whatever the script."""
        params = message_params(request, self._cache)
        try:
            counted = await self._client.with_options(timeout=COUNT_TIMEOUT_SECONDS).messages.count_tokens(
                model=request.model, system=params["system"], messages=params["messages"]
            )
            return int(counted.input_tokens)
        except (anthropic.APIError, httpx2.TransportError, TimeoutError):
            return input_tokens_upper_bound(request)

    async def write_report(
        self, request: ReportRequest, on_usage: UsageListener | None = None
    ) -> ReportAnswer:
        progress = ProgressThrottle(on_usage)
        streamed = StreamedAnswer()
        deadline = asyncio.timeout(self._deadline)
        try:
            async with deadline:
                await self._stream(request, streamed, progress)
        except (anthropic.APIError, httpx2.TransportError) as exc:
            await progress.finish(streamed.usage())
            raise translate_error(exc, request.model, self._client.api_key) from exc
        except TimeoutError as exc:
            await progress.finish(streamed.usage())
            if not deadline.expired():
                raise  # not ours: a caller's timeout, or one raised by ``on_usage``
            raise ProviderUnavailable("the model provider did not finish in time") from exc
        except BaseException:
            await progress.finish(streamed.usage())  # cancelled: what streamed is what was billed
            raise
        await progress.finish(streamed.usage())
        return finished_answer(streamed)

    async def _stream(
        self, request: ReportRequest, streamed: StreamedAnswer, progress: ProgressThrottle
    ) -> None:
        params = message_params(request, self._cache)
        stream = await self._client.messages.create(
            model=params["model"],
            max_tokens=params["max_tokens"],
            system=params["system"],
            messages=params["messages"],
            stream=True,
            extra_headers=dict(request.trace_headers) or None,
        )
        streamed.request_id = stream.response.headers.get("request-id", "")
        streamed.limits = provider_limits(stream.response.headers)
        try:
            # The raw events, not the SDK's typed ones: see service.providers.anthropic.stream for why.
            async for sse in AsyncStream.raw_events(stream.response):
                if sse.event == "error":
                    body = _json_or_text(sse.data)
                    raise anthropic.APIStatusError(f"{body}", response=stream.response, body=body)
                streamed.feed(sse.event, sse.data)
                if progress.due():  # the usage carries the whole text so far: built only when passed on
                    await progress.update(streamed.usage())
        finally:
            await stream.close()


def message_params(request: ReportRequest, cache: PromptCachePolicy) -> MessageCreateParamsNonStreaming:
    """The Messages API parameters of a report: the same for a streamed call and a batch request.

    The system prompt, the fixed prefix of every report, is marked cacheable when it is long enough
    to be cached for the model; otherwise it goes as plain text, as before."""
    user = build_user_message(request.input_text, request.input_name, request.content_type)
    system: str | list[TextBlockParam] = SYSTEM_PROMPT
    if cache.caches_system_prompt(request.model):
        system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]
    return {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "system": system,
        "messages": [{"role": "user", "content": user}],
    }


def _json_or_text(data: str) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
