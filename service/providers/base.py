"""The provider interface, free of any vendor: what a report request and its answer are, and how
a provider reports the output it has streamed so far."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from service.core.ratelimit import ProviderLimits

# How often running token counts are passed on while an answer streams; the final count always is.
# Each one is a Redis script call (the ledger, the progress, the text): once a second keeps a long
# answer cheap.
PROGRESS_INTERVAL_SECONDS = 1.0
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class ReportRequest:
    input_text: str  # decoded input, any size: the prompt builder truncates it to a budget
    input_name: str  # e.g. "sales.csv"
    content_type: str  # "text/csv", "application/json", "text/plain", or anything else
    model: str
    max_tokens: int
    # W3C trace context (``traceparent``) naming the model call's span, sent with the call so the
    # provider's side joins the trace; empty when tracing is off.
    trace_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportAnswer:
    text: str  # Markdown
    model: str  # the model that answered, as the API named it
    input_tokens: int
    output_tokens: int
    offline: bool = False
    request_id: str = ""  # the provider's id of the call that wrote it
    # Input the provider served from its prompt cache, and input it wrote there; both apart from
    # ``input_tokens`` (the uncached rest), as the API reports them. See ``billed_input_tokens``.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    limits: ProviderLimits | None = None  # the provider's rate-limit readings on the call's response
    # The model stopped at ``max_tokens``: the text ends where the limit fell, not where the model would.
    output_limit_reached: bool = False


@dataclass(frozen=True)
class CallUsage:
    """What a call has cost so far: the input once the provider counted it (at the start of its
    answer), the output as it streams (an estimate until the provider's own count arrives)."""

    input_tokens: int
    output_tokens: int
    request_id: str = ""
    final: bool = False  # the call is over (answered, failed or cut): these are its last counts
    text: str = ""  # the answer's text so far, for pages that show it as it is written
    cache_read_tokens: int = 0  # as in ``ReportAnswer``: apart from ``input_tokens``
    cache_write_tokens: int = 0
    # The provider's rate-limit readings, from the response's start on: fold them into the shared
    # limiter as soon as they first appear (``LlmLimiter.fold``).
    limits: ProviderLimits | None = None


def billed_input_tokens(usage: CallUsage | ReportAnswer) -> int:
    """Every input token the provider bills, at whatever rate: uncached, written to and read from
    the cache (what a budget kept in tokens counts)."""
    return usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens


def rate_limited_input_tokens(usage: CallUsage | ReportAnswer) -> int:
    """What the provider's input-tokens-per-minute limit counts for a call: the uncached input and
    the cache writes, not the cache reads (Anthropic's rule for current models). Charge the shared
    input bucket this much."""
    return usage.input_tokens + usage.cache_write_tokens


# Hears a call's usage as it goes: at its start, while it streams (paced by ``ProgressThrottle``),
# and exactly once more with ``final`` when it ends, however it ends.
UsageListener = Callable[[CallUsage], Awaitable[None]]


class Provider(Protocol):
    async def count_input_tokens(self, request: ReportRequest) -> int:
        """The input tokens the call for ``request`` will be billed for (or an upper bound)."""
        ...

    async def write_report(
        self, request: ReportRequest, on_usage: UsageListener | None = None
    ) -> ReportAnswer:
        """Write the report; ``on_usage`` hears what the call costs as it goes."""
        ...


class ProgressThrottle:
    """Passes running usage on at most once per ``interval`` (the first at once), then the final
    usage once.

    The one throttle between a streaming answer and the job's progress events: listeners must not
    throttle again, or the final count could be dropped.
    """

    def __init__(
        self,
        on_usage: UsageListener | None,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_usage = on_usage
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self._finished = False

    def due(self) -> bool:
        """Whether an ``update`` now would be passed on: a caller whose usage is costly to build
        (the answer's whole text so far) builds it only then."""
        return self._on_usage is not None and self._clock() - self._last >= self._interval

    async def update(self, usage: CallUsage) -> None:
        now = self._clock()
        if self._on_usage is not None and now - self._last >= self._interval:
            self._last = now
            await self._on_usage(usage)

    async def finish(self, usage: CallUsage) -> None:
        """The call's last counts; only the first ``finish`` is passed on."""
        if self._on_usage is not None and not self._finished:
            self._finished = True
            await self._on_usage(dataclasses.replace(usage, final=True))
