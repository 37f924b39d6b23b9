"""The vocabulary of the operations table: parameters, bodies, answers and errors of one endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from service.core.errors import ApiError

Security = Literal["key", "key_or_token", "metrics", "public"]
Schema = dict[str, Any]

# What each error status means, from the contract's table; an operation may say more.
ERROR_MEANINGS = {
    400: "The request is malformed or fails validation: `issues` lists each problem.",
    401: "No API key, an unknown or revoked one.",
    402: "The caller's token budget for the period cannot cover even the smallest report.",
    404: "No such job, or another user's (they answer alike), or no longer retained.",
    409: "The operation does not fit the job's state.",
    413: "The request body is over the configured limit.",
    415: "The body's Content-Type is not one this endpoint takes.",
    422: "This idempotency key was already used with a different payload.",
    429: "Too many requests, or too much at once: `Retry-After` says when to try again.",
    503: "Redis is unreachable (nothing was half-written): retry after `Retry-After` seconds.",
}


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["query", "header", "path"]
    schema: Schema
    description: str
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A request body: a pydantic model as JSON, or raw schemas per media type."""

    description: str
    model: type[BaseModel] | None = None
    media: dict[str, Schema] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """A successful answer: a model as JSON, or a raw schema under another media type."""

    description: str
    model: type[BaseModel] | None = None
    media: str = "application/json"
    schema: Schema | None = None
    headers: tuple[str, ...] = ()  # names from ``HEADERS`` in ``service.api.openapi.document``
    links: tuple[str, ...] = ()  # operation ids this answer's ``jobId`` leads to


@dataclass(frozen=True)
class Operation:
    operation_id: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    errors: dict[int, str] = field(default_factory=dict)  # status -> meaning ("" for the default)
    params: tuple[Param, ...] = ()
    body: Body | None = None
    security: Security = "key"
    description: str = ""


def errors(*statuses: int, **meanings: str) -> dict[int, str]:
    """``errors(401, 503, e404="...")``: the statuses an operation answers, some with their own words."""
    own = {int(name.removeprefix("e")): text for name, text in meanings.items()}
    return {status: own.get(status, "") for status in sorted({*statuses, *own})}


def error_codes() -> dict[int, list[str]]:
    """Every ``ApiError`` code by HTTP status, read from the error tree itself."""
    found: dict[int, set[str]] = {}
    pending: list[type[ApiError]] = list(ApiError.__subclasses__())
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        found.setdefault(kind.status, set()).add(kind.code)
    return {status: sorted(codes) for status, codes in found.items()}
