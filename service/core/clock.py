"""Time in one place, so records, tokens and tests agree on what "now" is."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_from_ms(ms: int | None) -> str | None:
    """ISO 8601 UTC with millisecond precision, as the contract's time fields are written."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
