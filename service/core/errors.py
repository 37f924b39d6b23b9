"""The service's own error tree: every failure a client or a job can meet.

    ServiceError
    ├── ApiError                      an HTTP request cannot be served (the contract's error table)
    │   ├── BadRequest                400 bad_request (``issues``: the list of problems)
    │   ├── Unauthorized              401 unauthorized
    │   ├── BudgetExceeded            402 budget_exceeded
    │   ├── NotFound                  404 not_found (unknown job, or another user's)
    │   ├── Conflict                  409 conflict
    │   ├── PayloadTooLarge           413 payload_too_large
    │   ├── UnsupportedMediaType      415 unsupported_media_type
    │   ├── IdempotencyKeyMismatch    422 idempotency_key_mismatch
    │   ├── RateLimited               429 rate_limited (Retry-After)
    │   ├── QuotaExceeded             429 quota_exceeded: the user's stored uploads would pass their quota
    │   └── Unavailable               503 unavailable (Retry-After): Redis unreachable
    └── JobError                      a step of a report job failed; ``reason`` is shown to the user,
        │                             ``error_code`` is the status object's ``error.code``
        ├── PermanentJobError         retrying cannot help: the job fails at once
        │   ├── InputRejected         input_rejected: the input is refused, missing, too large or unreadable
        │   ├── ProviderRejected      provider_rejected: the provider refused the request (4xx, spend limit)
        │   └── BudgetExhausted       budget_exceeded: the user's budget cannot cover the call's worst case
        └── TransientJobError         worth another attempt after ``retry_after`` seconds (or backoff)
            ├── InputUnavailable      input_unavailable: the input host timed out, reset or answered 5xx
            ├── ProviderUnavailable   provider_unavailable: the provider timed out, 5xx, 429 or 529
            └── JobTimedOut           timed_out: the attempt (or one of its steps) ran past its deadline

A job error of no more specific kind (a render that failed, a bug) has the code ``internal``; a job
stopped because it kept killing its workers, ``worker_crashed``.

Vendor errors (httpx, anthropic, redis, borb) are translated into these inside the one adapter
module that talks to that vendor, so nothing above the adapters ever sees a vendor exception.
The API turns ``ApiError`` into the contract's JSON in one place (``service.api.errors``).
"""

from __future__ import annotations

from service.core.ratelimit import ProviderLimits


class ServiceError(Exception):
    """Root of every error this service raises on purpose."""


class ApiError(ServiceError):
    """A request that cannot be served; ``status`` and ``code`` come from the contract's table."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class BadRequest(ApiError):
    status, code = 400, "bad_request"

    def __init__(self, message: str, issues: list[str] | None = None) -> None:
        super().__init__(message)
        self.issues = issues if issues is not None else [message]

    def body(self) -> dict[str, object]:
        return {**super().body(), "issues": self.issues}


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class BudgetExceeded(ApiError):
    status, code = 402, "budget_exceeded"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class IdempotencyKeyMismatch(ApiError):
    status, code = 422, "idempotency_key_mismatch"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class QuotaExceeded(ApiError):
    status, code = 429, "quota_exceeded"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


# The status object's ``error.code`` values (the contract's list).
JOB_ERROR_CODES = frozenset(
    {
        "input_unavailable",
        "input_rejected",
        "provider_unavailable",
        "provider_rejected",
        "budget_exceeded",
        "timed_out",
        "worker_crashed",
        "internal",
    }
)


class JobError(ServiceError):
    """A job step failed. ``reason`` is safe to show the job's owner: no secrets, no input data."""

    error_code = "internal"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentJobError(JobError):
    """Another attempt would fail the same way."""


class InputRejected(PermanentJobError):
    """The input cannot be used: refused address, 4xx, too large, not text."""

    error_code = "input_rejected"


class ProviderRejected(PermanentJobError):
    """The model provider refused the request for a reason retrying cannot fix."""

    error_code = "provider_rejected"


class BudgetExhausted(PermanentJobError):
    """The user's remaining budget cannot cover the worst case of the call: it is never made."""

    error_code = "budget_exceeded"


class TransientJobError(JobError):
    """Another attempt may succeed; ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class InputUnavailable(TransientJobError):
    """The input host did not answer in time, reset the connection or answered 5xx."""

    error_code = "input_unavailable"


class ProviderUnavailable(TransientJobError):
    """The provider timed out, failed (5xx), or asked us to slow down (429, 529)."""

    error_code = "provider_unavailable"

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        limits: ProviderLimits | None = None,
        mid_answer: bool = False,
    ) -> None:
        super().__init__(reason, retry_after=retry_after)
        self.status = status
        self.limits = limits  # what the provider's refusal said of its rate limits (a 429's headers)
        # After the 200: the answer had begun (an `error` event, a dropped connection, a stream that
        # ended early). Its input was billed; the job retries it without spending an attempt.
        self.mid_answer = mid_answer


class JobTimedOut(TransientJobError):
    """The attempt, or one of its steps (a render, a summary), ran past its deadline."""

    error_code = "timed_out"
