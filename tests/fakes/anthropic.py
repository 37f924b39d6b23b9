"""A fake Anthropic Messages API (``POST /v1/messages``) on loopback, for tests and benchmarks.

It runs uvicorn in a background thread so a test can inspect what it received while worker
subprocesses reach it by URL. Replies, latency and scripted failures are set per test; the wire
format (JSON bodies, SSE event sequence, error shapes, headers) follows the real API. With ``limits``
it also enforces per-model rate limits the way the real API does (token buckets, 429s, headers).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from types import TracebackType
from typing import Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.anthropic_batches import FakeBatches
from tests.fakes.anthropic_billing import Bill, PromptCache, PromptUsage
from tests.fakes.anthropic_control import control_routes
from tests.fakes.anthropic_errors import (
    Failure,
    HttpFailure,
    overloaded,
    rate_limited,
    server_error,
)
from tests.fakes.anthropic_limits import AccountLimits, Admission, FakeLimits, Refusal
from tests.fakes.anthropic_replies import RecordedCall, ReplyFn, default_reply, validate_request
from tests.fakes.anthropic_wire import (
    Body,
    SimulatedDisconnect,
    answer_events,
    base_headers,
    error_response,
    estimate_tokens,
    message_body,
    rate_limited_response,
    stream_ending,
    text_chunks,
)
from tests.fakes.threaded_server import ThreadedServer, serve_in_thread

# --- the app ------------------------------------------------------------------------------------

_ids = itertools.count(1)


class _DropDisconnectTracebacks(logging.Filter):
    """Keeps the traceback of a drop we simulate on purpose out of the test output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedDisconnect))


class FakeAnthropic:
    """The fake server. ``reply``, ``first_byte_delay``, ``chunk_delay``, ``chunk_chars``, ``served_model``
    and ``stop_reason`` may be changed between calls; ``reset`` puts them back.

    A streamed answer's output is billed when it ends, however it ends; one its client cut ends when
    the server sees the cut, which comes after the client has moved on (later still under load, or
    ``settle_delay`` seconds later when a test asks for it). ``settled()`` waits until every answer
    begun since the last ``reset`` is billed: read the bill after it. ``reset`` forgets answers begun
    before it: whenever they end, they bill nothing into the next test's bill.

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
        self._call_total = self._counts = 0
        self._generation = 0  # bumped by reset: answers begun before it belong to an earlier test
        self._unbilled = 0  # streamed answers of this generation whose output is not billed yet
        self._failures: deque[Failure] = deque()
        self._default_limits = limits
        self._account = AccountLimits(limits)
        self._server: ThreadedServer | None = None
        # Which input is read from or written to the prompt cache; what every call and batch cost.
        self.prompt_cache, self.bill = PromptCache(), Bill()
        self.batches = FakeBatches(self._answer, self.prompt_cache, self.bill)
        self.batches.served_model = lambda: self.served_model
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                *self.batches.routes(),
                *control_routes(self),
            ]
        )

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://{self._host}:{self._port}"

    def start(self) -> Self:
        self._port, self._server = serve_in_thread(self.app, self._host, self._port, "fake-anthropic")
        error_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _DropDisconnectTracebacks) for f in error_log.filters):
            error_log.addFilter(_DropDisconnectTracebacks())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

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
        return self._account.limits

    @limits.setter
    def limits(self, limits: FakeLimits | None) -> None:
        self._account.replace(limits)

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
        return self._account.refused

    def reset(self) -> None:
        """Forgets calls, queued failures and limit usage; puts the behaviour back to the constructor's."""
        with self._lock:
            self._calls.clear()
            self._call_total = self._counts = 0
            self._failures.clear()
            self._generation += 1
            self._unbilled = 0
        for part in (self.prompt_cache, self.bill, self.batches):
            part.reset()
        self.limits = self._default_limits
        self._restore_defaults()

    def _restore_defaults(self) -> None:
        self.reply, self.first_byte_delay, self.chunk_delay, self.chunk_chars, self.served_model = (
            self._defaults
        )
        self.settle_delay = 0.0  # how late a streamed answer's end is billed (a server slow to see a cut)
        self.stop_reason: str | None = None  # forces the answer's stop reason (e.g. "refusal")

    # --- the endpoints ------------------------------------------------------------------------------

    def _record(self, call: RecordedCall) -> tuple[Failure | None, int]:
        """Records the call; returns its scripted failure, if any, and the generation it arrived in."""
        with self._lock:
            self._calls.append(call)
            self._call_total += 1
            return (self._failures.popleft() if self._failures else None), self._generation

    def _admit(self, body: Body, request_id: str) -> Admission | Response | None:
        """Charges the call to its model's buckets at its start, like the API (input and cache
        writes count, cache reads do not); None without limits."""
        input_tokens = self.prompt_cache.usage(body, remember=False).limited_input
        admitted = self._account.admit(str(body["model"]), input_tokens, int(body["max_tokens"]))
        if isinstance(admitted, Refusal):
            return rate_limited_response(request_id, admitted.wait, admitted.binding, admitted.headers)
        return admitted

    def _settle(self, admission: Admission | None, model: str, output_tokens: int) -> None:
        """The answer ended: its output is billed, and charged to the limits."""
        self.bill.add("realtime", model, None, output_tokens)
        self._account.settle(admission, output_tokens)

    async def settled(self, timeout: float = 10.0) -> None:
        """Waits until every streamed answer begun since the last ``reset`` has ended and is billed.
        A client that cuts an answer (a cancel, a kill) is done with it before the server sees the
        cut: its bill is final only then."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with self._lock:
                unbilled = self._unbilled
            if not unbilled:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{unbilled} answers never ended"
            await asyncio.sleep(0.01)

    def _begin_answer(self, generation: int, model: str, prompt: PromptUsage) -> None:
        """A streamed answer starts: its input is billed, its output is unbilled until it ends.
        Nothing of a call that arrived before a reset is billed: the request may have waited in the
        server (its first byte's delay) while its test ended, and its bill is not the next test's."""
        with self._lock:
            if generation != self._generation:
                return
            self._unbilled += 1
        self.bill.add("realtime", model, prompt)

    def _end_answer(
        self, generation: int, admission: Admission | None, model: str, output_tokens: int
    ) -> None:
        """A streamed answer ended (``settle_delay`` later, if set, on the server's loop)."""
        delay = self.settle_delay
        if delay > 0:
            asyncio.get_running_loop().call_later(
                delay, self._bill_answer, generation, admission, model, output_tokens
            )
        else:
            self._bill_answer(generation, admission, model, output_tokens)

    def _bill_answer(
        self, generation: int, admission: Admission | None, model: str, output_tokens: int
    ) -> None:
        with self._lock:
            if generation != self._generation:
                return  # begun before a reset: its test is over, and the bill it would join is gone
        self._settle(admission, model, output_tokens)
        with self._lock:
            if generation == self._generation:
                self._unbilled -= 1

    @property
    def billed_tokens(self) -> tuple[int, int]:
        """(input, output) tokens billed for every realtime answer started, cut or finished, as the API
        bills; input counts cache reads and writes too (``bill`` has them apart, and batch usage)."""
        tally = self.bill.tokens("realtime")
        inputs = tally.input_tokens + tally.cache_read_tokens + tally.cache_write_tokens
        return inputs, tally.output_tokens

    @property
    def count_calls(self) -> int:
        """Calls to the free token-counting endpoint (not in ``calls``)."""
        with self._lock:
            return self._counts

    async def _count_tokens(self, request: Request) -> Response:
        try:
            body: object = await request.json()
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self._counts += 1
        if not RecordedCall({}, headers).api_key or not isinstance(body, dict):
            return error_response(HttpFailure(401, "authentication_error", "invalid x-api-key"), "req_count")
        return JSONResponse({"input_tokens": self.prompt_cache.usage(body, remember=False).total})

    async def _messages(self, request: Request) -> Response:
        request_id = f"req_fake{next(_ids):08d}"
        try:
            body: object = await request.json()
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        failure, generation = self._record(RecordedCall(body if isinstance(body, dict) else {}, headers))
        problem = failure if isinstance(failure, HttpFailure) else validate_request(body, headers)
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
        prompt = self.prompt_cache.usage(body)
        if body.get("stream") is True:
            self._begin_answer(generation, model, prompt)  # its input is billed, whatever comes next
            events = answer_events(
                _with_usage(message_body(body, "", None, msg_id, model), prompt),
                text_chunks(text, self.chunk_chars),
                ending=lambda sent: stream_ending(failure, stop_reason, text),
                cut_after=failure.after_chunks if failure is not None else None,
                chunk_delay=self.chunk_delay,
                on_end=lambda sent: self._end_answer(generation, admission, model, estimate_tokens(sent)),
            )
            answer_headers["cache-control"] = "no-cache"
            return StreamingResponse(events, media_type="text/event-stream", headers=answer_headers)
        if failure is not None:
            self._settle(admission, model, 0)
            return error_response(server_error(), request_id)
        await asyncio.sleep(self.chunk_delay * len(text_chunks(text, self.chunk_chars)))
        answer = _with_usage(message_body(body, text, stop_reason, msg_id, model), prompt)
        with self._lock:
            current = generation == self._generation
        if current:  # as for a streamed answer: a call from before a reset bills nothing now
            self.bill.add("realtime", model, prompt)
            self._settle(admission, model, answer["usage"]["output_tokens"])
        return JSONResponse(answer, headers=answer_headers)

    def _answer(self, body: Body) -> tuple[str, str]:
        """The reply, cut to ``max_tokens`` (at ~4 characters a token) the way the model would be."""
        text = self.reply(body)
        limit = int(body["max_tokens"]) * 4
        text, stop_reason = (text[:limit], "max_tokens") if len(text) > limit else (text, "end_turn")
        return text, self.stop_reason or stop_reason


def _with_usage(message: Body, prompt: PromptUsage) -> Body:
    """The message with its input split as the prompt cache saw it."""
    return {**message, "usage": {**message["usage"], **prompt.as_usage()}}
