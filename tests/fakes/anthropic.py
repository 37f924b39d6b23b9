"""A fake Anthropic Messages API (``POST /v1/messages``) on loopback, for tests and benchmarks.

It runs uvicorn in a background thread so a test can inspect what it received while worker
subprocesses reach it by URL. Replies, latency and scripted failures are set per test; the wire
format (JSON bodies, SSE event sequence, error shapes, headers) follows the real API. With ``limits``
it also enforces per-model rate limits the way the real API does (token buckets, 429s, headers).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.anthropic_errors import (
    Disconnect,
    Failure,
    HttpFailure,
    StreamFailure,
    bad_request,
    invalid_api_key,
    model_not_found,
    overloaded,
    permission_denied,
    rate_limited,
    request_too_large,
    server_error,
    tier_spend_limit_reached,
    usage_limit_400,
    usage_limit_429,
)
from tests.fakes.anthropic_limits import Admission, FakeLimits, ModelBuckets
from tests.fakes.anthropic_wire import (
    Body,
    SimulatedDisconnect,
    base_headers,
    error_response,
    estimate_tokens,
    message_body,
    prompt_text,
    rate_limited_response,
    sse,
    stream_ending,
    text_chunks,
)

# the failures, limits and token counting live in their own modules; tests import them from here
__all__ = [
    "Disconnect", "Failure", "FakeAnthropic", "FakeLimits", "HttpFailure", "RecordedCall", "StreamFailure",
    "bad_request", "default_reply", "estimate_tokens", "invalid_api_key", "model_not_found", "overloaded",
    "permission_denied", "prompt_text", "rate_limited", "request_too_large", "server_error", "sized_reply",
    "tier_spend_limit_reached", "usage_limit_400", "usage_limit_429",
]  # fmt: skip

ReplyFn = Callable[[Body], str]

MARKER_PATTERN = re.compile(r"MARKER-[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class RecordedCall:
    """One HTTP request the fake received: its JSON body and its headers (names lower-cased)."""

    body: Body
    headers: dict[str, str]

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def api_key(self) -> str | None:
        """The key the client sent, whichever header carried it (``x-api-key`` or a Bearer token)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


# --- replies ------------------------------------------------------------------------------------


def default_reply(body: Body) -> str:
    """A deterministic Markdown report quoting the first ``MARKER-...`` found in the prompt."""
    found = MARKER_PATTERN.search(prompt_text(body))
    marker = found.group(0) if found else "none"
    return (
        "# Executive report\n\n"
        "## Key findings\n"
        f"- The input carried the marker {marker}.\n"
        f"- The request asked for at most {body.get('max_tokens')} output tokens.\n"
        "- Revenue grew steadily across the period covered by the data.\n\n"
        "## Analysis\n"
        "The figures are consistent from one period to the next and show no gaps. "
        "Growth is concentrated in the largest segment, while the smaller ones stay flat.\n\n"
        "## Recommendations\n"
        "1. Keep investing in the segment that drives growth.\n"
        "2. Review the flat segments next quarter.\n"
    )


def sized_reply(tokens: int) -> ReplyFn:
    """A reply of about ``tokens`` output tokens (4 characters each), to size the output in benchmarks."""
    text = ("# Executive report\n\n" + "Revenue grew steadily. " * (tokens * 4 // 23 + 1))[: tokens * 4]
    return lambda body: text


# --- the app ------------------------------------------------------------------------------------

_ids = itertools.count(1)


def _validate(body: object, headers: Mapping[str, str]) -> HttpFailure | None:
    """The checks the real API makes first: a key, then the required fields."""
    if not RecordedCall({}, dict(headers)).api_key:
        return HttpFailure(401, "authentication_error", "x-api-key header is required")
    if not isinstance(body, dict):
        return bad_request("The request body is not valid JSON.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return bad_request("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return bad_request("max_tokens: Field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return bad_request("messages: at least one message is required")
    return None


class _DropDisconnectTracebacks(logging.Filter):
    """Keeps the traceback of a drop we simulate on purpose out of the test output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedDisconnect))


class FakeAnthropic:
    """The fake server. ``reply``, ``first_byte_delay``, ``chunk_delay``, ``chunk_chars``, ``served_model``
    and ``stop_reason`` may be changed between calls; ``reset`` puts them back.

    ``fail_next`` queues failures consumed one per call, in order; calls past the queue succeed.
    ``StreamFailure`` and ``Disconnect`` apply to streamed calls (a plain call answers them with a 500).
    ``storm`` queues N 529s or 429s. ``limits`` (settable; setting it refills every bucket) enforces
    per-model rate limits: a call that does not fit is answered 429 at once and counted in
    ``rate_limited_count``; scripted failures come before the limits and take nothing from them.
    Delays are ``asyncio.sleep``: thousands of slow answers run at once on the server's loop.
    """

    def __init__(
        self,
        *,
        reply: ReplyFn = default_reply,
        first_byte_delay: float = 0.0,
        chunk_delay: float = 0.0,
        chunk_chars: int = 16,
        served_model: str | None = None,
        limits: FakeLimits | None = None,
        max_recorded: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._defaults = (reply, first_byte_delay, chunk_delay, chunk_chars, served_model)
        self._restore_defaults()
        self._host, self._port = host, port
        self._lock = threading.Lock()
        # Only the last ``max_recorded`` calls keep their bodies: a long benchmark must not grow forever.
        self._calls: deque[RecordedCall] = deque(maxlen=max_recorded)
        self._call_total = 0
        self._failures: deque[Failure] = deque()
        self._default_limits = self._limits = limits
        self._buckets: dict[str, ModelBuckets] = {}
        self._rate_limited = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/_fake/storm", self._storm_endpoint, methods=["POST"]),
                Route("/_fake/stats", self._stats_endpoint, methods=["GET"]),
            ]
        )

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://{self._host}:{self._port}"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # leave the test process's logging configuration alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            loop="asyncio",
            http="h11",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        error_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _DropDisconnectTracebacks) for f in error_log.filters):
            error_log.addFilter(_DropDisconnectTracebacks())
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("FakeAnthropic did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait for answers a test has stopped reading
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what tests script and inspect --------------------------------------------------------------

    def fail_next(self, *failures: Failure) -> None:
        with self._lock:
            self._failures.extend(failures)

    def storm(self, count: int, *, status: int = 529, retry_after: str | None = "1") -> None:
        """The next ``count`` calls answer 529 ``overloaded_error`` (or 429 ``rate_limit_error``)."""
        failure = rate_limited(retry_after) if status == 429 else overloaded(retry_after)
        self.fail_next(*[failure] * count)

    @property
    def limits(self) -> FakeLimits | None:
        return self._limits

    @limits.setter
    def limits(self, limits: FakeLimits | None) -> None:
        with self._lock:
            self._limits = limits
            self._buckets.clear()

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    @property
    def call_count(self) -> int:
        with self._lock:
            return self._call_total

    @property
    def rate_limited_count(self) -> int:
        """Calls answered 429 because they did not fit the limits (scripted 429s are not counted)."""
        with self._lock:
            return self._rate_limited

    def reset(self) -> None:
        """Forgets calls, queued failures and limit usage; puts the behaviour back to the constructor's."""
        with self._lock:
            self._calls.clear()
            self._call_total = 0
            self._failures.clear()
            self._rate_limited = 0
        self.limits = self._default_limits
        self._restore_defaults()

    def _restore_defaults(self) -> None:
        self.reply, self.first_byte_delay, self.chunk_delay, self.chunk_chars, self.served_model = (
            self._defaults
        )
        self.stop_reason: str | None = None  # forces the answer's stop reason (e.g. "refusal")

    # --- the endpoints ------------------------------------------------------------------------------

    def _record(self, call: RecordedCall) -> Failure | None:
        with self._lock:
            self._calls.append(call)
            self._call_total += 1
            return self._failures.popleft() if self._failures else None

    def _admit(self, body: Body, request_id: str) -> Admission | Response | None:
        """Charges the call to its model's buckets at its start, like the API; None without limits."""
        input_tokens, max_tokens = estimate_tokens(prompt_text(body)), int(body["max_tokens"])
        with self._lock:
            if self._limits is None:
                return None
            now = time.monotonic()
            buckets = self._buckets.get(str(body["model"]))
            if buckets is None:
                buckets = self._buckets[str(body["model"])] = ModelBuckets(self._limits, now)
            wait, binding = buckets.admit(input_tokens, max_tokens, now)
            headers = buckets.headers()
            if wait > 0:
                self._rate_limited += 1
        if wait > 0:
            return rate_limited_response(request_id, wait, binding, headers)
        return Admission(buckets, max_tokens, headers)

    def _settle(self, admission: Admission | None, output_tokens: int) -> None:
        if admission is not None:
            with self._lock:
                admission.buckets.settle(admission.reserved, output_tokens, time.monotonic())

    async def _messages(self, request: Request) -> Response:
        request_id = f"req_fake{next(_ids):08d}"
        try:
            body: object = await request.json()
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        failure = self._record(RecordedCall(body if isinstance(body, dict) else {}, headers))
        problem = failure if isinstance(failure, HttpFailure) else _validate(body, headers)
        if problem is not None:
            await asyncio.sleep(self.first_byte_delay)
            return error_response(problem, request_id)
        assert isinstance(body, dict)  # _validate checked it
        assert not isinstance(failure, HttpFailure)
        admission = self._admit(body, request_id)
        if isinstance(admission, Response):
            return admission  # a 429 comes at once, before any latency
        await asyncio.sleep(self.first_byte_delay)
        text, stop_reason = self._answer(body)
        model = self.served_model or str(body["model"])
        msg_id = f"msg_fake{next(_ids):08d}"
        answer_headers = {**base_headers(request_id), **(admission.headers if admission else {})}
        if body.get("stream") is True:
            events = self._events(body, text, stop_reason, msg_id, model, failure, admission)
            answer_headers["cache-control"] = "no-cache"
            return StreamingResponse(events, media_type="text/event-stream", headers=answer_headers)
        if failure is not None:
            self._settle(admission, 0)
            return error_response(server_error(), request_id)
        await asyncio.sleep(self.chunk_delay * len(text_chunks(text, self.chunk_chars)))
        answer = message_body(body, text, stop_reason, msg_id, model)
        self._settle(admission, answer["usage"]["output_tokens"])
        return JSONResponse(answer, headers=answer_headers)

    def _answer(self, body: Body) -> tuple[str, str]:
        """The reply, cut to ``max_tokens`` (at ~4 characters a token) the way the model would be."""
        text = self.reply(body)
        limit = int(body["max_tokens"]) * 4
        text, stop_reason = (text[:limit], "max_tokens") if len(text) > limit else (text, "end_turn")
        return text, self.stop_reason or stop_reason

    async def _events(
        self,
        body: Body,
        text: str,
        stop_reason: str,
        msg_id: str,
        model: str,
        failure: StreamFailure | Disconnect | None,
        admission: Admission | None,
    ) -> AsyncIterator[bytes]:
        start = message_body(body, "", None, msg_id, model)
        yield sse("message_start", {"type": "message_start", "message": start})
        block = {"type": "text", "text": ""}
        yield sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        yield sse("ping", {"type": "ping"})
        sent = ""
        try:  # however the answer ends (done, failed, dropped, client gone), output is what was sent
            for n, chunk in enumerate(text_chunks(text, self.chunk_chars)):
                if failure is not None and n == failure.after_chunks:
                    break
                await asyncio.sleep(self.chunk_delay)
                delta = {"type": "text_delta", "text": chunk}
                yield sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
                sent += chunk
            for event in stream_ending(failure, stop_reason, text):
                yield event
        finally:
            self._settle(admission, estimate_tokens(sent))

    async def _storm_endpoint(self, request: Request) -> Response:
        """``POST /_fake/storm {"count": N, "status": 529|429, "retry_after": "2"}``, for benchmarks."""
        spec = await request.json()
        retry_after = spec.get("retry_after", "1")
        self.storm(
            int(spec.get("count", 1)),
            status=int(spec.get("status", 529)),
            retry_after=None if retry_after is None else str(retry_after),
        )
        return JSONResponse({"queued": int(spec.get("count", 1))})

    async def _stats_endpoint(self, request: Request) -> Response:
        return JSONResponse({"calls": self.call_count, "rate_limited": self.rate_limited_count})


def _limits_from_args(args: argparse.Namespace) -> FakeLimits | None:
    values = {"requests_per_minute": args.rpm, "input_tokens_per_minute": args.itpm,
              "output_tokens_per_minute": args.otpm}  # fmt: skip
    given = {name: value for name, value in values.items() if value is not None}
    return FakeLimits(**given) if given else None


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.anthropic --port N``: serve until interrupted (for benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-byte-delay", type=float, default=0.0, help="seconds before an answer starts")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--chunk-chars", type=int, default=16, help="characters per streamed chunk")
    parser.add_argument("--reply-tokens", type=int, default=None, help="answer about this many tokens")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute, per model")
    parser.add_argument("--itpm", type=int, default=None, help="input tokens per minute, per model")
    parser.add_argument("--otpm", type=int, default=None, help="output tokens per minute, per model")
    parser.add_argument("--max-recorded", type=int, default=1000, help="calls whose bodies are kept")
    args = parser.parse_args(argv)
    fake = FakeAnthropic(
        reply=default_reply if args.reply_tokens is None else sized_reply(args.reply_tokens),
        first_byte_delay=args.first_byte_delay,
        chunk_delay=args.chunk_delay,
        chunk_chars=args.chunk_chars,
        limits=_limits_from_args(args),
        max_recorded=args.max_recorded,
        host=args.host,
        port=args.port,
    )
    with fake:
        print(f"fake Anthropic API at {fake.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
