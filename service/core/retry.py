"""When to try again: the one place backoff is computed and a server's ``Retry-After`` is read."""

from __future__ import annotations

import email.utils
import random
import re
import time

# delta-seconds (RFC 9110; with decimals, as the SDKs accept them): ASCII digits only, where
# ``str.isdigit`` would also take "²" or "٣" and ``float`` would then fail on them.
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


def backoff_seconds(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None, jitter: float | None = None
) -> float:
    """Exponential from ``base`` (attempt 1 waits about ``base``), full-jittered between 50% and 100%.

    A server's own ``retry-after`` is a floor: retrying sooner than it asked would only be refused.
    """
    exponential = min(cap, base * 2.0 ** max(0, attempt - 1))
    share = jitter if jitter is not None else random.uniform(0.5, 1.0)
    return float(max(exponential * share, retry_after or 0.0))


def parse_retry_after(value: str | None, *, cap: float, now: float | None = None) -> float | None:
    """A ``Retry-After`` value (delta-seconds or an HTTP date) as seconds from now, within 0..``cap``;
    None when there is no usable hint. ``cap`` is the caller's own bound: a remote server must never
    decide alone how long we wait (a day, an hour), whatever it sends."""
    text = (value or "").strip()
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), cap)
    parsed = email.utils.parsedate_tz(text) if text else None
    if parsed is None:
        return None
    seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    return min(max(seconds, 0.0), cap)
