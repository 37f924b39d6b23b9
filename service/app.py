"""The API's app factory: routes, middleware and error handlers as plain lists and dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from service.api import docs as api_docs
from service.api import listing as api_listing
from service.api import ops as api_ops
from service.api import page
from service.api import reports as api_reports
from service.api import uploads as api_inputs
from service.api import webhooks as api_webhooks
from service.api.cors import cors_middleware
from service.api.errors import EXCEPTION_HANDLERS
from service.api.events import endpoint as events
from service.api.events.fanout import EventFanout, open_fanout
from service.api.events.leases import open_stream_leases
from service.api.middleware import RequestContextMiddleware
from service.api.openapi.document import openapi_json
from service.api.resources import open_api_services
from service.core.settings import Settings
from service.telemetry.logs import configure_logging
from service.telemetry.loop_lag import LoopLagMonitor, calm_garbage_collector
from service.telemetry.metrics import MetricsBuffer
from service.telemetry.tracing import closing, open_tracing

# Hottest first: Starlette tries routes in order.
ROUTES: list[BaseRoute] = [
    Route("/api/reports", api_reports.create_report, methods=["POST"]),
    Route("/api/reports/{job_id}", api_reports.get_report, methods=["GET"]),
    Route("/api/inputs", api_inputs.upload_input, methods=["POST"]),
    Route("/api/usage", api_ops.usage, methods=["GET"]),
    Route("/healthz", api_ops.healthz, methods=["GET"]),
    Route("/readyz", api_ops.readyz, methods=["GET"]),
    Route("/metrics", api_ops.metrics, methods=["GET"]),
    Route("/api/reports/{job_id}", api_reports.cancel_report, methods=["DELETE"]),
    Route("/api/reports/{job_id}/pdf", api_reports.get_report_pdf, methods=["GET"]),
    Route("/api/reports/{job_id}/events", events.job_events, methods=["GET"]),
    Route("/api/reports", api_listing.list_reports, methods=["GET"]),
    Route("/api/webhooks/secret", api_webhooks.webhook_secret, methods=["GET"]),
    Route("/", page.index, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", api_docs.docs, methods=["GET"]),
    Route("/docs/assets/{name}", api_docs.docs_asset, methods=["GET"]),
]


def api_gauges(fanout: EventFanout, lag: LoopLagMonitor) -> Callable[[MetricsBuffer], None]:
    """What this API process reports with every metrics flush."""

    def gauges(buffer: MetricsBuffer) -> None:
        buffer.set_gauge("sse_subscribers", fanout.subscriber_count, node=buffer.instance)
        buffer.set_gauge(
            "event_loop_lag_seconds", lag.summary()["p99_ms"] / 1000, process="api", node=buffer.instance
        )

    return gauges


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> Starlette:
    """Builds the API. Called by uvicorn (``--factory``) with no arguments, by tests with settings."""
    settings = settings if settings is not None else Settings()
    if configure_logs:
        configure_logging(settings, process="api")
    tracing = open_tracing(settings, process="api")  # None when off

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with (  # closed in reverse: the streams end, then their leases go, then Redis, then spans
            closing(tracing),
            open_api_services(settings) as services,
            open_stream_leases(services.redis, settings) as leases,
            open_fanout(services.redis, settings) as fanout,
        ):
            lag = LoopLagMonitor(report_every=settings.loop_lag_report_seconds)
            lag.start()
            if configure_logs:  # a server process of its own, not a test building many apps
                calm_garbage_collector()
            services.metrics.gauge_sources.append(api_gauges(fanout, lag))
            try:
                yield {"services": services, "fanout": fanout, "leases": leases}
            finally:
                await lag.stop()

    return Starlette(
        routes=ROUTES,
        # The request context outermost: preflights get a request id and an access line too.
        middleware=[Middleware(RequestContextMiddleware, tracing=tracing), *cors_middleware(settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
