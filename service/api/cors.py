"""Cross-origin access to ``/api/*`` for the origins in ``CORS_ALLOW_ORIGINS``, with Starlette's
CORSMiddleware: preflights answered, ``Access-Control-Allow-Origin`` on every answer (event streams
and errors included), ``Vary: Origin`` so a cache never hands one origin's answer to another."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.core.errors import BadRequest
from service.core.settings import Settings

API_PREFIX = "/api/"
METHODS = ("GET", "POST", "DELETE")
# Named one by one: a "*" in Access-Control-Allow-Headers does not cover Authorization (Fetch
# standard), and every request of this API carries it.
REQUEST_HEADERS = ("authorization", "content-type", "idempotency-key", "last-event-id")
# What a page's script may read of an answer besides the CORS-safelisted headers.
EXPOSED_HEADERS = (
    "retry-after",
    "idempotent-replayed",
    "location",
    "content-disposition",
    "x-request-id",
)
PREFLIGHT_MAX_AGE_SECONDS = 600


class ApiCorsMiddleware(CORSMiddleware):
    """Only for ``/api/*``: the page, the docs and the operational endpoints stay same-origin."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=METHODS,
            allow_headers=REQUEST_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )
        self.inner = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await super().__call__(scope, receive, send)
        else:
            await self.inner(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        """A refused preflight is the contract's JSON error, not Starlette's plain text."""
        answer = super().preflight_response(request_headers)
        if answer.status_code == 200:
            return answer
        problem = f"preflight refused: {bytes(answer.body).decode()}"  # "Disallowed CORS origin", ...
        refused = BadRequest(problem, [problem])
        response = error_response(refused)
        for name in ("vary", "access-control-allow-origin", "access-control-allow-methods"):
            if name in answer.headers:
                response.headers[name] = answer.headers[name]
        return response


def cors_middleware(settings: Settings) -> list[Middleware]:
    """None at all when no origin is allowed: a preflight is then a plain 405, as without CORS."""
    origins = settings.cors_origins
    return [Middleware(ApiCorsMiddleware, origins=origins)] if origins else []
