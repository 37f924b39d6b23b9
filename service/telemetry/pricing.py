"""What a model call costs, estimated from its tokens and the public price list, for ``costUsd`` and the
cost metrics (users' budgets are kept in tokens).

Each model family has four prices (USD per million tokens): uncached input, output, a cache read and
a cache write with the default 5-minute lifetime. For most models a read is a tenth of the input
price and a write 1.25 times it, but not for all, so each is written out. The Message Batches API
charges half of every one of them (``BATCH_SHARE``; the cache multipliers stack with it). Prompts
here stay far below the 200k-token long-context tiers some models have, so those are not modelled.

Why not the ``genai-prices`` package: it knows all of this (MIT, batch and cache prices included),
but it imports httpx2 at import time (its price updater fetches from GitHub at run time) and loads
a 1.6 MB table; we need a dozen rows. Its bundled data is the test oracle instead
(``tests/telemetry/test_pricing.py``), so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Lane = Literal["realtime", "batch"]
BATCH_SHARE = 0.5  # Message Batches: half the price of every kind of token


@dataclass(frozen=True)
class ModelPrices:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float  # the 5-minute cache

    def scaled(self, share: float) -> ModelPrices:
        # Rounded to a billionth of a dollar per million: 0.1 x 0.5 is 0.05, not 0.05000000000000001.
        def of(price: float) -> float:
            return round(price * share, 9)

        return ModelPrices(of(self.input), of(self.output), of(self.cache_read), of(self.cache_write))


def _standard(input_price: float, output_price: float) -> ModelPrices:
    """The usual cache rule: a read at a tenth of the input price, a write at 1.25 times."""
    return ModelPrices(input_price, output_price, round(input_price / 10, 9), input_price * 1.25)


# By model-id prefix, the most specific first. A model that matches none counts as free here rather
# than being guessed at.
_PRICES: tuple[tuple[str, ModelPrices], ...] = (
    ("claude-opus-4-0", _standard(15.0, 75.0)),
    ("claude-opus-4-1", _standard(15.0, 75.0)),
    ("claude-opus-5-5", ModelPrices(4.0, 20.0, 0.2, 5.0)),
    ("claude-opus", _standard(5.0, 25.0)),  # Opus 4.5 to 4.8 and 5
    ("claude-3-opus", _standard(15.0, 75.0)),
    ("claude-sonnet-5-5", ModelPrices(2.0, 10.0, 0.1, 2.5)),
    ("claude-sonnet-5", _standard(2.0, 10.0)),
    ("claude-sonnet", _standard(3.0, 15.0)),  # Sonnet 4 to 4.6
    ("claude-3-7-sonnet", _standard(3.0, 15.0)),
    ("claude-3-5-sonnet", _standard(3.0, 15.0)),
    ("claude-haiku-5-5", _standard(0.1, 0.5)),
    ("claude-haiku", _standard(1.0, 5.0)),  # Haiku 4.5
    ("claude-3-5-haiku", _standard(0.8, 4.0)),
    ("claude-3-haiku", ModelPrices(0.25, 1.25, 0.03, 0.3)),
)


def model_prices(model: str, lane: Lane = "realtime") -> ModelPrices | None:
    """The model's prices in a lane (batch: half), or None for a model the list does not know."""
    for prefix, prices in _PRICES:
        if model.startswith(prefix):
            return prices.scaled(BATCH_SHARE) if lane == "batch" else prices
    return None


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    lane: Lane = "realtime",
) -> float:
    """What a call cost: ``input_tokens`` is the uncached input (the API's ``input_tokens``), the cache
    reads and writes come apart, as the API reports them."""
    prices = model_prices(model, lane)
    if prices is None:
        return 0.0
    micro_usd = (
        input_tokens * prices.input
        + output_tokens * prices.output
        + cache_read_tokens * prices.cache_read
        + cache_write_tokens * prices.cache_write
    )
    return micro_usd / 1_000_000
