"""The Anthropic API's failures in our terms: ``ProviderUnavailable`` when another attempt may
succeed, ``ProviderRejected`` when it cannot. No reason ever carries the API key or the input."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime

import anthropic
import httpx2  # the SDK's transport: a stream cut mid-answer surfaces as its error, unwrapped

from service.core.errors import JobError, ProviderRejected, ProviderUnavailable
from service.core.ratelimit import LimitReading, ProviderLimits
from service.core.retry import parse_retry_after

# However long the provider asks us to wait, the fleet pauses this long at most and then tries one
# call: a "retry-after: 86400" (or a proxy's mistake) must not stop every worker for a day.
MAX_PAUSE_SECONDS = 60.0
_MILLISECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")  # ASCII digits: never "²"

# The HTTP status each API error type comes with, for `error` events that arrive inside a 200 stream.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# `error.details.error_code` values meaning the account may not spend more until someone acts or the
# month turns: the API sends them with 429 (tier and contract caps) or 402, and retrying cannot help.
_SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)
# Without a code (older API versions, proxies, the Claude Code workspace's 429) only the text tells.
_SPEND_LIMIT_TEXT = re.compile(r"spend limit|usage limit|credit|billing|extra usage", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")
_RESET_HEADER = re.compile(r"anthropic-ratelimit-(.+)-reset")
_COUNT = re.compile(r"[0-9]{1,15}")  # ASCII digits: never "²"
_LIMITS = ("requests", "input-tokens", "output-tokens")  # the limiter's three buckets, in its order
_REJECTIONS = {
    400: "the model provider rejected the request as invalid (400)",
    401: "the model provider rejected the API key (401); check ANTHROPIC_API_KEY",
    402: "the model provider refused for a billing problem (402); check the account's billing",
    403: "the API key may not use this model or resource (403); check the key's workspace and permissions",
    404: "the model provider does not know the model {model} (404); check the configured model name",
    413: "the request was too large for the model provider (413)",
}


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's wait hint, at most ``MAX_PAUSE_SECONDS``: ``retry-after-ms``, else ``retry-after``,
    else the latest reset among the exhausted ``anthropic-ratelimit-*`` limits."""
    now = time.time() if now is None else now
    lowered = {name.lower(): value for name, value in headers.items()}
    in_ms = lowered.get("retry-after-ms", "").strip()
    if _MILLISECONDS.fullmatch(in_ms):
        return min(float(in_ms) / 1000, MAX_PAUSE_SECONDS)
    explicit = parse_retry_after(lowered.get("retry-after"), cap=MAX_PAUSE_SECONDS, now=now)
    if explicit is not None:
        return explicit
    resets = [
        rfc3339_timestamp(value)
        for name, value in lowered.items()
        if (match := _RESET_HEADER.fullmatch(name))
        and lowered.get(f"anthropic-ratelimit-{match.group(1)}-remaining", "").strip() == "0"
    ]
    known = [reset for reset in resets if reset is not None]
    return min(max(0.0, max(known) - now), MAX_PAUSE_SECONDS) if known else None


def rfc3339_timestamp(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None


def provider_limits(
    headers: Mapping[str, str], *, wall: float | None = None, mono: float | None = None
) -> ProviderLimits | None:
    """The ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-*`` headers of a response (a
    success or a 429) as readings; None when it has none of them. ``wall`` and ``mono``: the time
    they were read (the reset is a date; it becomes seconds from then)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    wall = time.time() if wall is None else wall
    requests, inputs, outputs = (_reading(lowered, name, wall) for name in _LIMITS)
    if requests is None and inputs is None and outputs is None:
        return None
    return ProviderLimits(requests, inputs, outputs, read_at=time.monotonic() if mono is None else mono)


def _reading(headers: Mapping[str, str], name: str, wall: float) -> LimitReading | None:
    prefix = f"anthropic-ratelimit-{name}"
    limit, remaining = headers.get(f"{prefix}-limit", ""), headers.get(f"{prefix}-remaining", "")
    reset = rfc3339_timestamp(headers.get(f"{prefix}-reset", ""))
    if not (_COUNT.fullmatch(limit.strip()) and _COUNT.fullmatch(remaining.strip())) or reset is None:
        return None
    return LimitReading(int(limit), int(remaining), max(0.0, reset - wall))


def translate_error(exc: Exception, model: str, secret: str | None = None) -> JobError:
    """Our error for a vendor failure; ``secret`` (the API key) is scrubbed from any text we pass on."""
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderUnavailable("the model provider did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderUnavailable("could not reach the model provider")
    if isinstance(exc, httpx2.TransportError):  # raw, not wrapped by the SDK: only after the 200
        return ProviderUnavailable("the connection to the model provider dropped mid-answer", mid_answer=True)
    if isinstance(exc, anthropic.APIStatusError):
        return _translate_status(exc, model, secret)
    return ProviderUnavailable("the model provider's answer could not be read")


def _translate_status(exc: anthropic.APIStatusError, model: str, secret: str | None) -> JobError:
    mid_stream = exc.status_code < 400  # an `error` event after a 200: only its type says what went wrong
    status = _TYPE_STATUS.get(exc.type or "", 500) if mid_stream else exc.status_code
    detail = _detail(exc.api_message, exc.request_id, secret)
    if _is_spend_limit(exc.error_code, status, exc.api_message):
        return _spend_limit_reached(detail)
    if _retryable(status):
        if mid_stream:
            # The status its type stands for: an overload or a rate limit pauses the fleet as a 529 or
            # 429 would; ``mid_answer`` says it came after the 200 (billed, no attempt spent).
            reason = f"the model provider failed mid-answer ({str(exc.type)[:40]})"
            return ProviderUnavailable(reason, status=status, mid_answer=True)
        hint = retry_after_seconds(exc.response.headers)
        limits = provider_limits(exc.response.headers)
        return ProviderUnavailable(
            _unavailable_reason(status), retry_after=hint, status=status, limits=limits
        )
    return _rejected(status, model, detail)


def translate_batch_error(
    error_type: str,
    message: str | None,
    model: str,
    *,
    error_code: str | None = None,
    secret: str | None = None,
) -> JobError:
    """Our error for one request of a batch that ended ``errored``, classified as the same failure of
    a realtime call would be: ``ProviderRejected`` when retrying cannot help, else
    ``ProviderUnavailable`` (with no ``status``: it must not pause the realtime lane as a 429 does)."""
    status = _TYPE_STATUS.get(error_type, 500)
    detail = _detail(message, None, secret)
    if _is_spend_limit(error_code, status, message):
        return _spend_limit_reached(detail)
    if _retryable(status):
        return ProviderUnavailable(f"the model provider failed this batch request ({error_type[:40]})")
    return _rejected(status, model, detail)


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _spend_limit_reached(detail: str) -> ProviderRejected:
    return ProviderRejected(
        "the model provider account cannot spend more (spend limit or credit reached); "
        f"raise the limit or add credit{detail}"
    )


def _rejected(status: int, model: str, detail: str) -> ProviderRejected:
    reason = _REJECTIONS.get(status, f"the model provider refused the request ({status})")
    return ProviderRejected(reason.format(model=repr(model)) + detail)


def _is_spend_limit(error_code: str | None, status: int, message: str | None) -> bool:
    if error_code is not None:
        return error_code in _SPEND_LIMIT_CODES  # a stable code wins over the wording
    return status in (400, 402, 429) and bool(_SPEND_LIMIT_TEXT.search(message or ""))


def _unavailable_reason(status: int) -> str:
    if status == 429:
        return "the model provider asked us to slow down (429)"
    if status == 529:
        return "the model provider is overloaded (529)"
    if status in (408, 504):
        return f"the model provider timed out ({status})"
    return f"the model provider failed ({status})"


def _detail(api_message: str | None, request_id: str | None, secret: str | None) -> str:
    """The provider's own message, one line, capped, with anything key-like scrubbed; and the request id."""
    message = " ".join((api_message or "").split())[:200]
    if secret:
        message = message.replace(secret, "[redacted]")
    message = _KEY_LIKE.sub("[redacted]", message)
    request = f" (request {request_id})" if request_id else ""
    return f": {message}{request}" if message else request
