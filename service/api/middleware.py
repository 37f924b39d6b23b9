"""Per-request context: a request id on every log line, one access line per request."""

from __future__ import annotations

import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("service.access")


def count_request(scope: Scope, status: int, elapsed: float) -> None:
    """Into the fleet's metrics, by route template (never the raw path: job ids would explode labels)."""
    services = scope.get("state", {}).get("services")
    if services is None:
        return
    route = scope.get("route")
    template = getattr(route, "path", "unmatched")
    services.metrics.inc("http_requests_total", route=template, method=scope["method"], status=str(status))
    services.metrics.observe("http_request_duration_seconds", elapsed, route=template)


class RequestContextMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        started = time.perf_counter()
        status = 500
        # Each request runs in its own task with its own copy of the context: what is bound here
        # goes away with it, so there is nothing to clear (clearing walks every context variable).
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
            # The path only: query strings may carry events tokens.
            log.info(
                "http_request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            count_request(scope, status, elapsed)
