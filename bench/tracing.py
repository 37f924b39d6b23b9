"""What tracing costs per request and per job: the request middleware driven directly (no server,
no network, so the difference is not lost in noise) and the worker's span helpers.

The middleware is timed four ways in alternating rounds: as it was before tracing and request ids
existed (``PreTracingMiddleware``, copied from the commit before them), as it is with tracing off,
with tracing off and an incoming X-Request-ID to check, and with tracing on (the real SDK, spans
batched to an exporter that drops them, so only the request path is measured).
Run it with ``.venv/bin/python -m bench tracing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.middleware import RequestContextMiddleware, count_request
from service.telemetry.otel import OtelTracing
from service.telemetry.tracing import job_span, span

REQUESTS = 2_000  # per round: short rounds, many of them, so a busy moment spoils few
ROUNDS = 40
SPANS = 100_000

log = structlog.get_logger("service.access")


class PreTracingMiddleware:
    """``RequestContextMiddleware`` as it was before tracing and X-Request-ID (commit 742494a)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        started = time.perf_counter()
        status = 500
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            log.info(
                "http_request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            count_request(scope, status, elapsed)


class DroppingExporter(SpanExporter):
    """Takes every batch and keeps nothing: the export thread's work is not on the request path."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def request_scope(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/healthz",
        "scheme": "http",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), *headers],
        "state": {},
    }


async def per_request_us(app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    started = time.perf_counter()
    for _ in range(REQUESTS):
        await app(request_scope(headers), receive, send)
    return (time.perf_counter() - started) / REQUESTS * 1e6


def quiet_logs() -> None:
    """As in production (JSON lines through orjson), written to /dev/null."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.JSONRenderer(orjson.dumps)],
        logger_factory=structlog.BytesLoggerFactory(open(os.devnull, "wb")),  # noqa: SIM115 (for the run)
        cache_logger_on_first_use=True,
    )


def span_helper_ns(helper: Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(SPANS):
        with helper():
            pass
    return (time.perf_counter() - started) / SPANS * 1e9


def measure_tracing() -> dict[str, Any]:
    quiet_logs()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    traced = OtelTracing(provider)
    caller = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    variants: dict[str, tuple[ASGIApp, list[tuple[bytes, bytes]]]] = {
        "before tracing": (PreTracingMiddleware(endpoint), []),
        "tracing off": (RequestContextMiddleware(endpoint), []),
        "tracing off, X-Request-ID sent": (
            RequestContextMiddleware(endpoint),
            [(b"x-request-id", b"req-42")],
        ),
        "tracing on, traceparent sent": (RequestContextMiddleware(endpoint, tracing=traced), caller),
    }
    for app, headers in variants.values():  # warm-up: first-use caches, allocator arenas
        asyncio.run(per_request_us(app, headers))
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for _ in range(ROUNDS):
        random.shuffle(order)  # no variant always runs first, or just after the slow one
        for name in order:
            rounds[name].append(asyncio.run(per_request_us(*variants[name])))
    provider.shutdown()
    shared = contextlib.nullcontext()
    helpers: dict[str, Callable[[], Any]] = {
        "the loop itself (a shared `nullcontext`)": lambda: shared,
        "`span()` (a stage), off": lambda: span("stage x"),
        "`job_span()`, off": lambda: job_span(None, "j", {}, 1),
    }
    return {
        "per_request_us": {name: (min(values), statistics.median(values)) for name, values in rounds.items()},
        "spans_ns": {name: min(span_helper_ns(helper) for _ in range(5)) for name, helper in helpers.items()},
    }


def tracing_section(machine: str) -> str:
    r = measure_tracing()
    before, _ = r["per_request_us"]["before tracing"]
    rows = "\n".join(
        f"| {name} | {low:.1f} | {median:.1f} | {low - before:+.1f} |"
        for name, (low, median) in r["per_request_us"].items()
    )
    helpers = "\n".join(f"| {name} | {ns:.0f} |" for name, ns in r["spans_ns"].items())
    return f"""## Tracing: what it costs per request and per job

Measured {machine}.
`RequestContextMiddleware` around an endpoint that answers at once, called {REQUESTS:,} times per
round straight from Python (no server, no socket: the middleware's own work is all that differs), the
variants in a new random order in each of {ROUNDS} rounds after a warm-up; the fastest round is the figure least disturbed by the other
work on this shared machine, the median shows the spread. Access lines are rendered as JSON and
written to /dev/null, as in production. "Before tracing" is the middleware as it was before tracing
and X-Request-ID existed. Tracing on uses the real SDK with a batch processor whose exporter drops
the spans (the export runs on its own thread, off the request path). Command: `python -m bench tracing`.

| middleware | µs per request (fastest round) | median round | fastest vs before |
|---|---|---|---|
{rows}

The worker's span helpers with tracing off, per call ({SPANS:,} calls, fastest of 5; a job makes one
job span, four stage spans and one model-call span, against a dozen Redis round trips):

| helper | ns per call |
|---|---|
{helpers}
"""
