"""Traces: which spans the service makes, named and attributed how, and the one check that makes
them free when tracing is off.

One trace per report: the API request (a child of the caller's ``traceparent``), each worker attempt
of the job (a child of that request, through the ``traceparent`` stored in the job record), the
attempt's stages, and the model call, whose own ``traceparent`` goes to the provider with the call.

Off (``OTEL_EXPORTER_OTLP_ENDPOINT`` unset), ``open_tracing`` returns None and nothing of
OpenTelemetry is imported: the middleware checks ``tracing is None`` once per request, and the
helpers below read one context variable and hand out a span that does nothing. On, the one module
that imports OpenTelemetry (``service.telemetry.otel``) provides the ``Tracing`` below.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Literal, Protocol

from service.core.settings import Settings

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]
SpanKind = Literal["server", "client", "consumer", "internal"]

# The W3C trace-context headers a request may carry (ASGI header names are lower case).
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


class Span(Protocol):
    def set(self, attributes: Attributes) -> None: ...

    def rename(self, name: str) -> None: ...

    def fail(self, error_type: str) -> None:
        """Marks the span failed, with ``error.type`` (never a message: spans leave the service)."""
        ...

    def headers(self) -> dict[str, str]:
        """The W3C trace-context headers (``traceparent``...) naming this span."""
        ...


class Tracing(Protocol):
    def span(
        self, name: str, kind: SpanKind, attributes: Attributes, parent: Mapping[str, str] | None
    ) -> AbstractContextManager[Span]:
        """A span, current while the block runs. ``parent``: W3C headers to continue (a trace of its
        own when they hold no valid ``traceparent``); None: a child of the current span."""
        ...

    def current_headers(self) -> dict[str, str]:
        """The W3C trace-context headers naming the current span (empty outside any)."""
        ...

    def shutdown(self) -> None:
        """Exports the spans still buffered; blocks until done (or the exporter's timeout)."""
        ...


class _NoSpan:
    """What every helper hands out when no trace is going on."""

    def set(self, attributes: Attributes) -> None:
        pass

    def rename(self, name: str) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass

    def headers(self) -> dict[str, str]:
        return {}


NO_SPAN: Span = _NoSpan()
_OFF: AbstractContextManager[Span] = nullcontext(NO_SPAN)  # stateless, so one serves every caller
# The tracing of the request or job this task handles, set by its outermost span: the spans inside
# it (stages, the model call) find it here instead of having a tracer handed down to them.
_current: ContextVar[Tracing | None] = ContextVar("tracing", default=None)


def open_tracing(settings: Settings, *, process: str) -> Tracing | None:
    """Tracing for this process (``api`` or ``worker``), or None when it is off."""
    endpoint = settings.traces_endpoint
    if endpoint is None:
        return None
    # Imported here, not at the top: a process with tracing off never loads OpenTelemetry's SDK, its
    # exporter, protobuf or requests.
    from service.telemetry import otel

    return otel.start(endpoint, settings.otel_service_name or f"report-service-{process}")


@asynccontextmanager
async def closing(tracing: Tracing | None) -> AsyncIterator[None]:
    """Exports the spans still buffered when the process stops: in a thread, as it is an HTTP call."""
    try:
        yield
    finally:
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)


@contextmanager
def _opened(
    tracing: Tracing, name: str, kind: SpanKind, attributes: Attributes, parent: Mapping[str, str] | None
) -> Iterator[Span]:
    with tracing.span(name, kind, attributes, parent) as span:
        try:
            yield span
        except Exception as exc:  # not CancelledError: a cancelled operation did not fail
            span.fail(type(exc).__name__)
            raise


@contextmanager
def _outermost(
    tracing: Tracing, name: str, kind: SpanKind, attributes: Attributes, parent: Mapping[str, str]
) -> Iterator[Span]:
    token = _current.set(tracing)
    try:
        with _opened(tracing, name, kind, attributes, parent) as span:
            yield span
    finally:
        _current.reset(token)


def http_server_span(
    tracing: Tracing, method: str, path: str, headers: Iterable[tuple[bytes, bytes]], request_id: str
) -> AbstractContextManager[Span]:
    """An API request's span: a child of the caller's trace when it sent a valid ``traceparent``."""
    carrier = {name.decode(): value.decode("latin-1") for name, value in headers if name in _TRACE_HEADERS}
    attributes = {"http.request.method": method, "url.path": path, "report_service.request_id": request_id}
    return _outermost(tracing, method, "server", attributes, carrier)


def http_responded(span: Span, method: str, route: str | None, status: int) -> None:
    """Names the span after its route template, never the raw path (job ids would make every
    request's name unique); a 5xx is a failure of ours, a 4xx the caller's."""
    span.set({"http.response.status_code": status})
    if route is not None:
        span.set({"http.route": route})
        span.rename(f"{method} {route}")
    if status >= 500:
        span.fail(str(status))


def job_span(
    tracing: Tracing | None, job_id: str, record: Mapping[str, str], attempt: int
) -> AbstractContextManager[Span]:
    """One attempt of a job, continuing the trace of the request that submitted it (the record's
    ``traceparent``; a trace of its own when it has none)."""
    if tracing is None:
        return _OFF
    attributes: Attributes = {
        "report_service.job_id": job_id,
        "report_service.report_id": record.get("report_id", ""),
        "report_service.attempt": attempt,
        "report_service.request_id": record.get("request_id", ""),
    }
    parent = {"traceparent": record.get("traceparent", "")}
    return _outermost(tracing, "generate_report", "consumer", attributes, parent)


def span(name: str, attributes: Attributes | None = None) -> AbstractContextManager[Span]:
    """A child of the current span (a stage of a job), or nothing when no trace is going on."""
    tracing = _current.get()
    if tracing is None:
        return _OFF
    return _opened(tracing, name, "internal", attributes or {}, None)


def model_call_span(provider: str, model: str, max_tokens: int) -> AbstractContextManager[Span]:
    """The model call, with the GenAI semantic conventions' attributes; its ``headers()`` go to the
    provider with the request, so the provider's side of the call joins this trace too."""
    tracing = _current.get()
    if tracing is None:
        return _OFF
    attributes: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": max_tokens,
    }
    return _opened(tracing, f"chat {model}", "client", attributes, None)


def model_call_usage(span: Span, input_tokens: int, output_tokens: int) -> None:
    """What the call was billed, as far as it went (a call cut short: what had streamed)."""
    span.set({"gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens})


def model_answered(span: Span, response_model: str) -> None:
    span.set({"gen_ai.response.model": response_model})


def current_traceparent() -> str:
    """The ``traceparent`` of the span this task is in ('' outside any): stored with a job, so its
    worker continues the trace."""
    tracing = _current.get()
    return "" if tracing is None else tracing.current_headers().get("traceparent", "")
