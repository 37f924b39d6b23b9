"""The fake Anthropic API's wire format: message JSON, SSE events, error bodies and headers, as the API's."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.responses import JSONResponse, Response

from tests.fakes.anthropic_errors import Disconnect, HttpFailure, StreamFailure
from tests.fakes.anthropic_limits import Bucket, rfc3339

Body = dict[str, Any]


def prompt_text(body: Body) -> str:
    """System prompt plus every text part of every message: what the API counts as input."""
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(system)
    elif isinstance(system, list):
        parts.extend(str(block.get("text", "")) for block in system if isinstance(block, dict))
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return "\n".join(parts)


def estimate_tokens(text: str) -> int:
    return len(text) // 4


def message_body(body: Body, text: str, stop_reason: str | None, msg_id: str, model: str) -> Body:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if stop_reason is not None else [],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": estimate_tokens(prompt_text(body)),
            "output_tokens": estimate_tokens(text) if stop_reason is not None else 1,
        },
    }


def text_chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class SimulatedDisconnect(Exception):
    """Raised inside a streamed body so uvicorn drops the connection mid-answer."""


def sse(event: str, data: Body) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_ending(failure: StreamFailure | Disconnect | None, stop_reason: str, text: str) -> list[bytes]:
    """The events after the text: the scripted failure, or the normal end with the real usage."""
    if isinstance(failure, StreamFailure):
        error = {"type": failure.error_type, "message": failure.message}
        return [sse("error", {"type": "error", "error": error})]
    if isinstance(failure, Disconnect):
        raise SimulatedDisconnect("connection dropped on purpose")
    delta_end = {"stop_reason": stop_reason, "stop_sequence": None}
    usage = {"output_tokens": estimate_tokens(text)}
    return [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("message_delta", {"type": "message_delta", "delta": delta_end, "usage": usage}),
        sse("message_stop", {"type": "message_stop"}),
    ]


def base_headers(request_id: str, exhausted_in: float | None = None) -> dict[str, str]:
    """The headers of an answer when no limits are set: an account so large it never binds (a
    limiter folding them in is never slowed), unless ``exhausted_in`` says the request limit is spent."""
    remaining = "0" if exhausted_in is not None else "99999"
    reset = rfc3339(exhausted_in if exhausted_in is not None else 0.001)
    return {
        "request-id": request_id,
        "anthropic-organization-id": "00000000-0000-4000-8000-000000000000",
        "anthropic-ratelimit-requests-limit": "100000",
        "anthropic-ratelimit-requests-remaining": remaining,
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "100000",
        "anthropic-ratelimit-tokens-remaining": "99000",
        "anthropic-ratelimit-tokens-reset": rfc3339(0.5),
    }


def error_response(failure: HttpFailure, request_id: str) -> JSONResponse:
    error: Body = {"type": failure.error_type, "message": failure.message}
    if failure.error_code is not None:
        error["details"] = {"error_code": failure.error_code}
    headers = base_headers(request_id, failure.reset_in)
    if failure.retry_after is not None:
        headers["retry-after"] = failure.retry_after
    retryable = failure.status in (408, 409, 429) or failure.status >= 500
    headers["x-should-retry"] = "true" if retryable else "false"
    headers.update(failure.headers)
    body = {"type": "error", "error": error, "request_id": request_id}
    return JSONResponse(body, status_code=failure.status, headers=headers)


def rate_limited_response(request_id: str, wait: float, binding: Bucket, headers: dict[str, str]) -> Response:
    what = binding.name.replace("-", " ")
    message = (
        f"This request would exceed your organization's rate limit of {int(binding.capacity):,} {what} "
        "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."
    )
    retry_after = str(math.ceil(wait))  # the API sends whole seconds
    return error_response(
        HttpFailure(429, "rate_limit_error", message, retry_after, headers=headers), request_id
    )


async def answer_events(
    start: Body,
    chunks: list[str],
    *,
    ending: Callable[[str], Iterable[bytes]],
    cut_after: int | None,
    chunk_delay: float,
    on_end: Callable[[str], None],
) -> AsyncIterator[bytes]:
    """A streamed answer's events: ``message_start`` (``start``), the text in ``chunks`` (cut after
    ``cut_after`` of them), then ``ending(sent)``. However it ends (done, failed, dropped, the client
    gone), ``on_end`` hears the text that was sent: that is the output the caller is billed for."""
    yield sse("message_start", {"type": "message_start", "message": start})
    block = {"type": "text", "text": ""}
    yield sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    yield sse("ping", {"type": "ping"})
    sent = ""
    try:
        for n, chunk in enumerate(chunks):
            if n == cut_after:
                break
            await asyncio.sleep(chunk_delay)
            delta = {"type": "text_delta", "text": chunk}
            yield sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            sent += chunk
        for event in ending(sent):
            yield event
    finally:
        on_end(sent)
