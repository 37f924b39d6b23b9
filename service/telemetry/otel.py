"""OpenTelemetry, the one module that imports it: a tracer provider exporting over OTLP/HTTP, and W3C
trace-context propagation, behind ``service.telemetry.tracing.Tracing``.

Imported only when tracing is on. The standard variables the SDK reads from the environment apply
(``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_BSP_*``...); the endpoint and the service name come from
Settings, so a ``.env`` file can set them too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.telemetry.tracing import Attributes, SpanKind

# W3C trace context, whatever OTEL_PROPAGATORS says: the contract and the job record speak traceparent.
_PROPAGATOR = TraceContextTextMapPropagator()
_KINDS = {
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "consumer": trace.SpanKind.CONSUMER,
    "internal": trace.SpanKind.INTERNAL,
}
INSTRUMENTATION_SCOPE = "report-service"


class OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(attributes)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, error_type: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR))
        self._span.set_attribute("error.type", error_type)

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier


class OtelTracing:
    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(INSTRUMENTATION_SCOPE)

    @contextmanager
    def span(
        self, name: str, kind: SpanKind, attributes: Attributes, parent: Mapping[str, str] | None
    ) -> Iterator[OtelSpan]:
        context = None if parent is None else _PROPAGATOR.extract(parent)
        # Failures are marked by the caller with error.type alone: an exception's message or traceback
        # may carry an input's URL, and spans leave the service.
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            yield OtelSpan(current)

    def current_headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier

    def shutdown(self) -> None:
        self._provider.shutdown()


def start(endpoint: str, service_name: str) -> OtelTracing:
    """The process's tracer provider, batching spans to ``endpoint`` (OTLP/HTTP, protobuf).

    Not installed as OpenTelemetry's global provider: nothing else in the process emits spans (the
    Anthropic SDK's own are turned off, see ``service.providers.anthropic.provider``), and a test can
    build as many as it likes. Shut down by the process's lifespan, not at exit.
    """
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return OtelTracing(provider)
