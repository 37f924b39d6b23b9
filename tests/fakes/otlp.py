"""A fake OTLP/HTTP trace receiver on loopback: what the service's real exporter sends, decoded.

A pytest plugin too (``pytest_plugins`` in tests/conftest.py): the ``fake_otlp`` fixture. It speaks
the collector's protocol (``POST /v1/traces``, a protobuf ``ExportTraceServiceRequest``,
gzip or not), so tests check the spans as a tracing backend would receive them, from this process
or from service subprocesses alike.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.threaded_server import ThreadedServer, serve_in_thread

AttributeValue = str | int | float | bool | list[object] | None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str  # 16 hex digits; '' for a root span
    kind: str  # SERVER, CLIENT, CONSUMER, INTERNAL...
    status: str  # UNSET, OK, ERROR
    attributes: dict[str, AttributeValue]
    service: str  # the resource's service.name


def _value(value: AnyValue) -> AttributeValue:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: list[KeyValue]) -> dict[str, AttributeValue]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _received(span: Span, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        attributes=_attributes(list(span.attributes)),
        service=service,
    )


class FakeOtlp:
    """``endpoint`` is what OTEL_EXPORTER_OTLP_ENDPOINT gets; ``spans`` every span received so far."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host, self._port = host, 0
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.exports = 0
        self._server: ThreadedServer | None = None
        self.app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    @property
    def endpoint(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> Self:
        self._port, self._server = serve_in_thread(self.app, self._host, 0, "fake-otlp")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def reset(self) -> None:
        with self._lock:
            self._spans.clear()
            self.exports = 0

    async def wait_for(self, name: str, count: int = 1, timeout: float = 20) -> list[ReceivedSpan]:
        """Waits until ``count`` spans named ``name`` have arrived (subprocesses export in batches)."""
        deadline = time.monotonic() + timeout
        while len(found := [span for span in self.spans if span.name == name]) < count:
            if time.monotonic() > deadline:
                got = [span.name for span in self.spans]
                raise TimeoutError(f"{count} span(s) {name!r} not received; got {got}")
            await asyncio.sleep(0.05)
        return found

    async def _traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in message.resource_spans:
            service = str(_attributes(list(resource_spans.resource.attributes)).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                received += [_received(span, service) for span in scope_spans.spans]
        with self._lock:
            self._spans += received
            self.exports += 1
        answer = ExportTraceServiceResponse().SerializeToString()
        return Response(answer, media_type="application/x-protobuf")


@pytest.fixture(scope="session")
def fake_otlp_server() -> Iterator[FakeOtlp]:
    with FakeOtlp() as fake:
        yield fake


@pytest.fixture
def fake_otlp(fake_otlp_server: FakeOtlp) -> FakeOtlp:
    """The session's fake OTLP/HTTP trace receiver, with the spans of earlier tests forgotten."""
    fake_otlp_server.reset()
    return fake_otlp_server
