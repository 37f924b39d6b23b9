"""What a model call costs, estimated from its tokens, for the cost metrics (never for billing users:
users are billed in tokens)."""

from __future__ import annotations

# USD per million tokens (input, output), by model family, from the public price list. A model that
# matches none counts as free here and is logged once, rather than guessed.
_PRICES: tuple[tuple[str, float, float], ...] = (
    ("claude-opus-4-0", 15.0, 75.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-opus", 5.0, 25.0),  # Opus 4.5 and later
    ("claude-sonnet", 3.0, 15.0),
    ("claude-haiku-4", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-haiku", 1.0, 5.0),
)


def price_per_million(model: str) -> tuple[float, float] | None:
    for prefix, input_price, output_price in _PRICES:
        if model.startswith(prefix):
            return input_price, output_price
    return None


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    prices = price_per_million(model)
    if prices is None:
        return 0.0
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000
