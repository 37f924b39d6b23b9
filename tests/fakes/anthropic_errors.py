"""The real Anthropic API's error answers, as failures a test queues on the fake with ``fail_next``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HttpFailure:
    """Answer the next call with an error status and the real error JSON shape."""

    status: int
    error_type: str
    message: str
    retry_after: str | None = None  # sent verbatim as the retry-after header
    error_code: str | None = None  # sent as error.details.error_code, as the API does for some errors
    reset_in: float | None = None  # marks the request limit exhausted, resetting this many seconds from now
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamFailure:
    """Start a streamed answer, then send an ``error`` event after ``after_chunks`` text deltas."""

    after_chunks: int = 2
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Disconnect:
    """Start a streamed answer, then drop the connection after ``after_chunks`` text deltas."""

    after_chunks: int = 2


Failure = HttpFailure | StreamFailure | Disconnect


def overloaded(retry_after: str | None = None) -> HttpFailure:
    return HttpFailure(529, "overloaded_error", "Overloaded", retry_after=retry_after)


def server_error() -> HttpFailure:
    return HttpFailure(500, "api_error", "Internal server error")


def rate_limited(retry_after: str | None = "7", reset_in: float | None = None) -> HttpFailure:
    message = (
        "This request would exceed the rate limit for your organization of 50,000 input tokens per "
        "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."
    )
    return HttpFailure(429, "rate_limit_error", message, retry_after=retry_after, reset_in=reset_in)


def tier_spend_limit_reached() -> HttpFailure:
    """The usage tier's monthly cap: a 429 with no retry-after, told apart by ``error_code``."""
    message = "Your organization has reached its monthly spend limit for its usage tier."
    return HttpFailure(429, "rate_limit_error", message, error_code="enforced_spend_limit_reached")


def usage_limit_429() -> HttpFailure:
    """A spend limit reported as a bare 429 (no details), as the Claude Code workspace does."""
    message = (
        "You have reached your specified workspace API usage limits. You will regain access on 2026-12-01."
    )
    return HttpFailure(429, "rate_limit_error", message, retry_after="3600")


def usage_limit_400() -> HttpFailure:
    """A spend limit the organization set itself: the API answers 400 invalid_request_error."""
    message = (
        "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."
    )
    return HttpFailure(400, "invalid_request_error", message)


def invalid_api_key() -> HttpFailure:
    return HttpFailure(401, "authentication_error", "invalid x-api-key")


def permission_denied() -> HttpFailure:
    message = "Your API key does not have permission to use the specified resource."
    return HttpFailure(403, "permission_error", message)


def model_not_found(model: str) -> HttpFailure:
    return HttpFailure(404, "not_found_error", f"model: {model}")


def request_too_large() -> HttpFailure:
    return HttpFailure(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")


def bad_request(message: str = "max_tokens: Field required") -> HttpFailure:
    return HttpFailure(400, "invalid_request_error", message)
