"""Per-model rate limits in the fake Anthropic API, as the real API enforces them: token buckets, headers."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_UNLIMITED = 10**12  # a limit left unset never binds


@dataclass(frozen=True)
class FakeLimits:
    """Per-model limits, as an API tier sets them: requests, input and output tokens per minute."""

    requests_per_minute: int = _UNLIMITED
    input_tokens_per_minute: int = _UNLIMITED
    output_tokens_per_minute: int = _UNLIMITED


class Bucket:
    """One limit as the API applies it: holds a minute's worth, refills continuously, starts full."""

    def __init__(self, name: str, per_minute: int, now: float) -> None:
        self.name, self.capacity, self.level, self._updated = name, float(per_minute), float(per_minute), now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._updated) * self.capacity / 60)
        self._updated = now

    def wait_for(self, amount: int) -> float:
        # A request larger than the whole bucket goes through once the bucket is full (overdrawing
        # it), as service.store.limiter assumes; otherwise such a request could never be served.
        return max(0.0, (min(amount, self.capacity) - self.level) * 60 / self.capacity)

    def headers(self, name: str | None = None) -> dict[str, str]:
        prefix = f"anthropic-ratelimit-{name or self.name}"
        return {
            f"{prefix}-limit": str(int(self.capacity)),
            f"{prefix}-remaining": str(max(0, math.floor(self.level))),
            f"{prefix}-reset": rfc3339((self.capacity - self.level) * 60 / self.capacity),  # full again
        }


class ModelBuckets:
    """One model's three buckets. Output is reserved from ``max_tokens`` until the answer ends."""

    def __init__(self, limits: FakeLimits, now: float) -> None:
        self.requests = Bucket("requests", limits.requests_per_minute, now)
        self.input = Bucket("input-tokens", limits.input_tokens_per_minute, now)
        self.output = Bucket("output-tokens", limits.output_tokens_per_minute, now)

    def admit(self, input_tokens: int, max_tokens: int, now: float) -> tuple[float, Bucket]:
        """Takes a request, its input and ``max_tokens`` when all three fit and answers a wait of 0;
        else takes nothing and answers the wait and the bucket that binds longest."""
        needs = ((self.requests, 1), (self.input, input_tokens), (self.output, max_tokens))
        for bucket, _ in needs:
            bucket.refill(now)
        wait, binding = max(
            ((bucket.wait_for(amount), bucket) for bucket, amount in needs), key=lambda w: w[0]
        )
        if wait == 0:
            for bucket, amount in needs:
                bucket.level -= amount
        return wait, binding

    def settle(self, reserved: int, used: int, now: float) -> None:
        """The answer ended: the output bucket is charged what was generated instead of ``max_tokens``."""
        self.output.refill(now)
        self.output.level = min(self.output.capacity, self.output.level + reserved - used)

    def headers(self) -> dict[str, str]:
        # tokens-* is the most restrictive of the token limits, as the API documents it
        tightest = min(self.input, self.output, key=lambda bucket: bucket.level / bucket.capacity)
        return {**self.requests.headers(), **self.input.headers(), **self.output.headers(),
                **tightest.headers("tokens")}  # fmt: skip


@dataclass(frozen=True)
class Admission:
    """A call let in under the limits: its output reservation, to settle when the answer ends."""

    buckets: ModelBuckets
    reserved: int
    headers: dict[str, str]


def rfc3339(seconds_from_now: float) -> str:
    """The moment ``seconds_from_now`` ahead, written as the API writes reset times."""
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Refusal:
    """A call that does not fit: how long until it would, the bucket that binds, the headers."""

    wait: float
    binding: Bucket
    headers: dict[str, str]


class AccountLimits:
    """The account's per-model limits, shared by every request thread: admit at the start of a call,
    settle at its end, count the calls refused. No ``limits``: everything is admitted, untracked."""

    def __init__(self, limits: FakeLimits | None) -> None:
        self._lock = threading.Lock()
        self._limits = limits
        self._buckets: dict[str, ModelBuckets] = {}
        self.refused = 0

    @property
    def limits(self) -> FakeLimits | None:
        return self._limits

    def replace(self, limits: FakeLimits | None) -> None:
        """New limits, every bucket full, the refusal count back to zero."""
        with self._lock:
            self._limits, self.refused = limits, 0
            self._buckets.clear()

    def admit(self, model: str, input_tokens: int, max_tokens: int) -> Admission | Refusal | None:
        with self._lock:
            if self._limits is None:
                return None
            now = time.monotonic()
            buckets = self._buckets.get(model)
            if buckets is None:
                buckets = self._buckets[model] = ModelBuckets(self._limits, now)
            wait, binding = buckets.admit(input_tokens, max_tokens, now)
            headers = buckets.headers()
            if wait > 0:
                self.refused += 1
                return Refusal(wait, binding, headers)
        return Admission(buckets, max_tokens, headers)

    def settle(self, admission: Admission | None, output_tokens: int) -> None:
        if admission is not None:
            with self._lock:
                admission.buckets.settle(admission.reserved, output_tokens, time.monotonic())
