"""Per-request context: a request id on every log line, one access line per request, and the
request's span when tracing is on."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.telemetry.logs import log_request
from service.telemetry.tracing import Tracing, http_responded, http_server_span

# An incoming X-Request-ID is kept when it is visible ASCII of at most 128 characters: it goes into
# every log line of the request and of the job it submits, and back out in a header. Anything else
# (too long, spaces, control or non-ASCII bytes) is dropped and a fresh id made.
_REQUEST_ID = re.compile(rb"[!-~]{1,128}")


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is one we can carry, else a fresh one."""
    for name, value in headers:
        if name == b"x-request-id":
            if _REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(8)


def request_id_of(request: Request) -> str:
    """The id the middleware gave this request (what a job it submits carries into its logs)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def route_template(scope: Scope) -> str | None:
    """The matched route's template (``/api/reports/{job_id}``), never the raw path."""
    return getattr(scope.get("route"), "path", None)


def count_request(scope: Scope, status: int, elapsed: float) -> None:
    """Into the fleet's metrics, by route template (never the raw path: job ids would explode labels)."""
    services = scope.get("state", {}).get("services")
    if services is None:
        return
    services.metrics.count_request(route_template(scope) or "unmatched", scope["method"], status, elapsed)


class RequestContextMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id  # the request's own copy of the state
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
            if self.tracing is None:  # the one check tracing costs when it is off
                await self.app(scope, receive, send_with_id)
            else:
                await self._traced(self.tracing, scope, receive, send_with_id, lambda: status)
        finally:
            elapsed = time.perf_counter() - started
            log_request(scope["method"], scope["path"], status, round(elapsed * 1000, 2))
            count_request(scope, status, elapsed)

    async def _traced(
        self, tracing: Tracing, scope: Scope, receive: Receive, send: Send, status: Callable[[], int]
    ) -> None:
        method = scope["method"]
        request_id = scope["state"]["request_id"]
        with http_server_span(tracing, method, scope["path"], scope["headers"], request_id) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                http_responded(span, method, route_template(scope), status())
