"""Request bodies: size limits, media types, JSON, and validation into clear 4xx errors."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from service.api.headers import header
from service.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.core.schemas import Lane

M = TypeVar("M", bound=BaseModel)

# ASCII digits only: ``str.isdigit`` takes "²" (one byte in Latin-1, as headers are decoded), which
# ``int`` refuses.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,64}")
_UTF8_BOM = b"\xef\xbb\xbf"


class ReportCreate(BaseModel):
    """Body of ``POST /api/reports``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_data_url: str = Field(
        alias="inputDataUrl",
        min_length=1,
        max_length=2048,
        description="an http(s) URL the worker may fetch, or an upload's `input://` URL",
        examples=["https://example.com/data/sales.csv"],
    )
    idempotency_key: str | None = Field(
        default=None,
        alias="idempotencyKey",
        min_length=8,
        max_length=128,
        description="the same key and payload again answer the same job (or the Idempotency-Key header)",
    )
    # Where the signed webhook goes when the job ends (checked like inputDataUrl).
    callback_url: str | None = Field(
        default=None,
        alias="callbackUrl",
        min_length=1,
        max_length=2048,
        description="an http(s) URL a signed webhook is POSTed to when the job ends (Standard Webhooks)",
    )
    lane: Lane = Field(
        default="realtime",
        description="`batch`: the provider's batch API, at half price, answered within 24 h",
    )


def media_type(request: Request) -> str:
    return header(request, b"content-type").split(";")[0].strip().lower()


def require_media_type(request: Request, allowed: tuple[str, ...]) -> str:
    kind = media_type(request)
    if kind not in allowed:
        shown = kind or "none"
        raise UnsupportedMediaType(f"Content-Type must be {' or '.join(allowed)} (got {shown})")
    return kind


async def read_body(request: Request, limit: int) -> bytes:
    """Reads at most ``limit`` bytes, refusing early on a larger Content-Length."""
    declared = header(request, b"content-length")
    if _CONTENT_LENGTH.fullmatch(declared):
        if int(declared) > limit:
            raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
        # The HTTP server frames the body by Content-Length: it cannot run past the declared size.
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """UTF-8 JSON (RFC 8259), a leading byte-order mark forgiven. orjson, not the standard library:
    it refuses nesting past 1024 levels (``json`` overflows Python's stack: a RecursionError) and
    lone surrogates (``json`` lets "\\ud800" through, to fail later when the text is encoded)."""
    require_media_type(request, ("application/json",))
    body = await read_body(request, limit)
    try:
        return orjson.loads(body.removeprefix(_UTF8_BOM))
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the body is not valid UTF-8 JSON", [f"invalid JSON: {exc}"]) from exc


def parse(model: type[M], data: Any, *, what: str = "body") -> M:
    """``what``: the part of the request ``data`` came from, as the error names it."""
    if not isinstance(data, dict):
        raise BadRequest(f"the {what} must be a JSON object", [f"{what}: expected a JSON object"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [_issue(error) for error in exc.errors(include_url=False)]
        raise BadRequest(f"the {what} failed validation: " + "; ".join(issues), issues) from exc


def _issue(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{location}: {error['msg']}"
