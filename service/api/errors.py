"""Errors become HTTP responses here and only here: the contract's JSON, never a traceback."""

from __future__ import annotations

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from service.api.responses import JSONResponse
from service.core.errors import ApiError, BadRequest, NotFound

log = structlog.get_logger(__name__)

# Starlette's own errors (unknown route, wrong method), mapped to the contract's codes.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound("no such endpoint"))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    body = {"error": code, "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed its side before the body it announced arrived: its mistake, not ours; no
    # traceback in the log and no 500 in the metrics (it is rarely there to read this answer).
    log.info("request_body_incomplete")
    return error_response(BadRequest("the request body ended before its Content-Length"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (with the request id), never to the client.
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    body = {"error": "internal_error", "message": "something went wrong on our side; it has been logged"}
    return JSONResponse(body, status_code=500)


EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    ClientDisconnect: _client_gone,
    Exception: _unexpected,
}
