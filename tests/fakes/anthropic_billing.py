"""What the fake Anthropic API bills: a prompt cache that decides which input is a cache read or a
write, and a bill kept per lane (realtime calls, batch requests) and model, in tokens and in USD.

The bill's prices are the fake's own copy of the public price list and its rules (a cache write at
1.25 times the input price for the 5-minute cache, a read at a tenth, batch usage at half of all
of it), written apart from ``service.telemetry.pricing`` so that a test comparing the two compares
two independent readings of the price list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes.anthropic_wire import Body, estimate_tokens, prompt_text

# USD per million input and output tokens, from the public price list.
LIST_PRICES = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
}
CACHE_WRITE_MULTIPLIER, CACHE_READ_MULTIPLIER, BATCH_MULTIPLIER = 1.25, 0.1, 0.5
CACHE_TTL_SECONDS = 300.0  # the default ("ephemeral", 5 minutes), refreshed by every read


@dataclass(frozen=True)
class PromptUsage:
    """A request's input as the API reports it: the uncached rest, and the cached prefix's tokens."""

    input_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def limited_input(self) -> int:
        """What the input-tokens-per-minute limit counts: no cache reads (current models)."""
        return self.input_tokens + self.cache_write_tokens

    def as_usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
        }


def cached_prefix(body: Body) -> str | None:
    """The text up to the last system block marked ``cache_control``, or None when none is marked."""
    system = body.get("system")
    if not isinstance(system, list):
        return None
    blocks = [block for block in system if isinstance(block, dict)]
    marked = [n for n, block in enumerate(blocks) if block.get("cache_control")]
    if not marked:
        return None
    return "\n".join(str(block.get("text", "")) for block in blocks[: marked[-1] + 1])


def default_minimum(model: str) -> int:
    """The documented shortest cacheable prefix: 2048 tokens for Haiku, 1024 for the others."""
    return 2048 if "haiku" in model else 1024


class PromptCache:
    """The account's prompt cache: a marked prefix seen within ``ttl`` (per model) is a read, else a
    write; a prefix shorter than ``minimum(model)`` is never cached, marked or not."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        self.ttl = CACHE_TTL_SECONDS
        self.minimum: Callable[[str], int] = default_minimum

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
        self.ttl, self.minimum = CACHE_TTL_SECONDS, default_minimum

    def usage(self, body: Body, *, remember: bool = True) -> PromptUsage:
        """How the request's input splits; ``remember=False`` only asks (a refused call caches nothing)."""
        total = estimate_tokens(prompt_text(body))
        prefix = cached_prefix(body)
        model = str(body.get("model", ""))
        if prefix is None or estimate_tokens(prefix) < self.minimum(model):
            return PromptUsage(total)
        cached = estimate_tokens(prefix)
        with self._lock:
            now, key = self._clock(), (model, prefix)
            hit = now - self._seen.get(key, float("-inf")) <= self.ttl
            if remember:
                self._seen[key] = now
        if hit:
            return PromptUsage(total - cached, cache_read_tokens=cached)
        return PromptUsage(total - cached, cache_write_tokens=cached)


@dataclass
class Tally:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, prompt: PromptUsage | None, output_tokens: int) -> None:
        if prompt is not None:
            self.input_tokens += prompt.input_tokens
            self.cache_read_tokens += prompt.cache_read_tokens
            self.cache_write_tokens += prompt.cache_write_tokens
        self.output_tokens += output_tokens


def list_price(model: str) -> tuple[float, float]:
    for prefix, prices in LIST_PRICES.items():
        if model.startswith(prefix):
            return prices
    raise KeyError(f"the fake has no price for {model!r}")


class Bill:
    """Tokens billed per lane and model, and what they cost; thread-safe (the server's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], Tally] = {}

    def reset(self) -> None:
        with self._lock:
            self._tallies.clear()

    def add(self, lane: str, model: str, prompt: PromptUsage | None, output_tokens: int = 0) -> None:
        with self._lock:
            self._tallies.setdefault((lane, model), Tally()).add(prompt, output_tokens)

    def tokens(self, lane: str) -> Tally:
        """Every model's tokens of one lane, summed."""
        total = Tally()
        with self._lock:
            for (kind, _), tally in self._tallies.items():
                if kind == lane:
                    total.add(PromptUsage(**_prompt_fields(tally)), tally.output_tokens)
        return total

    def lines(self) -> list[dict[str, Any]]:
        """The bill line by line: one per lane and model, its tokens of each kind."""
        with self._lock:
            items = list(self._tallies.items())
        return [
            {"lane": lane, "model": model, **_prompt_fields(tally), "output_tokens": tally.output_tokens}
            for (lane, model), tally in items
        ]

    def usd(self, lane: str | None = None) -> float:
        """What the bill comes to, both lanes unless one is named."""
        with self._lock:
            items = [(key, tally) for key, tally in self._tallies.items() if lane in (None, key[0])]
        return sum(_cost(model, tally) * (BATCH_MULTIPLIER if kind == "batch" else 1.0)
                   for (kind, model), tally in items)  # fmt: skip


def _prompt_fields(tally: Tally) -> dict[str, Any]:
    return {
        "input_tokens": tally.input_tokens,
        "cache_read_tokens": tally.cache_read_tokens,
        "cache_write_tokens": tally.cache_write_tokens,
    }


def _cost(model: str, tally: Tally) -> float:
    input_price, output_price = list_price(model)
    tokens_at_input_price = (
        tally.input_tokens
        + tally.cache_write_tokens * CACHE_WRITE_MULTIPLIER
        + tally.cache_read_tokens * CACHE_READ_MULTIPLIER
    )
    return (tokens_at_input_price * input_price + tally.output_tokens * output_price) / 1_000_000
