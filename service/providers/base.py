"""The provider interface, free of any vendor: what a report request and its answer are, and how
a provider reports the output it has streamed so far."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

# How often running token counts are passed on while an answer streams; the final count always is.
PROGRESS_INTERVAL_SECONDS = 0.25
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class ReportRequest:
    input_text: str  # decoded input, any size: the prompt builder truncates it to a budget
    input_name: str  # e.g. "sales.csv"
    content_type: str  # "text/csv", "application/json", "text/plain", or anything else
    model: str
    max_tokens: int


@dataclass(frozen=True)
class ReportAnswer:
    text: str  # Markdown
    model: str  # the model that answered, as the API named it
    input_tokens: int
    output_tokens: int
    offline: bool = False


# Hears the output tokens (estimated while streaming, real at the end) received so far.
OutputProgress = Callable[[int], Awaitable[None]]


class Provider(Protocol):
    async def write_report(
        self, request: ReportRequest, on_output: OutputProgress | None = None
    ) -> ReportAnswer:
        """Write the report; ``on_output`` hears the output tokens (estimated) received so far."""
        ...


class ProgressThrottle:
    """Passes running token counts on at most once per ``interval``, then the final count once.

    The one throttle between a streaming answer and the job's progress events: callers of
    ``on_output`` must not throttle again, or the final count could be dropped.
    """

    def __init__(
        self,
        on_output: OutputProgress | None,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_output = on_output
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")

    async def update(self, tokens: int) -> None:
        now = self._clock()
        if self._on_output is not None and now - self._last >= self._interval:
            self._last = now
            await self._on_output(tokens)

    async def finish(self, tokens: int) -> None:
        if self._on_output is not None:
            await self._on_output(tokens)
