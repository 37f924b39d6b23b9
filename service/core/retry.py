"""When to try a failed job again: the one place backoff is computed."""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None, jitter: float | None = None
) -> float:
    """Exponential from ``base`` (attempt 1 waits about ``base``), full-jittered between 50% and 100%.

    A server's own ``retry-after`` is a floor: retrying sooner than it asked would only be refused.
    """
    exponential = min(cap, base * 2.0 ** max(0, attempt - 1))
    share = jitter if jitter is not None else random.uniform(0.5, 1.0)
    return float(max(exponential * share, retry_after or 0.0))
