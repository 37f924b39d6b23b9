"""Prices: our table agrees with the public price list (as Anthropic's pricing page states it for the
service's default models, and as the maintained genai-prices list bundles it for every family), with
batch at half price and the cache multipliers, and survives the ledger's nano-USD per token."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from genai_prices import Usage, calc_price

from service.store.calls import nano_usd_per_token
from service.telemetry.pricing import Lane, ModelPrices, cost_usd, model_prices

# A model id per family in our table, as the API names them.
MODELS = [
    "claude-opus-4-0",
    "claude-opus-4-1-20250805",
    "claude-opus-4-5-20251101",
    "claude-opus-4-6",
    "claude-opus-4-7",
    "claude-opus-5",
    "claude-opus-5-5",
    "claude-3-opus-20240229",
    "claude-sonnet-4-20250514",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-6",
    "claude-sonnet-5",
    "claude-sonnet-5-5",
    "claude-3-7-sonnet-20250219",
    "claude-3-5-sonnet-20241022",
    "claude-haiku-4-5-20251001",
    "claude-haiku-5-5",
    "claude-3-5-haiku-20241022",
    "claude-3-haiku-20240307",
]
PRICE_DATE = datetime(2026, 12, 1, tzinfo=UTC)  # the list is as of this day (genai-prices 0.2.3)
MILLION = 1_000_000


def listed_usd(model: str, usage: dict[str, int], batch: bool = False) -> float:
    """genai-prices' figure; its ``input_tokens`` is every input token, cached ones included."""
    total_input = usage["input"] + usage["cache_read"] + usage["cache_write"]
    priced = calc_price(
        Usage(
            input_tokens=total_input,
            output_tokens=usage["output"],
            cache_read_tokens=usage["cache_read"],
            cache_write_tokens=usage["cache_write"],
        ),
        model,
        provider_id="anthropic",
        genai_request_timestamp=PRICE_DATE,
        price_context={"processing": "batch"} if batch else None,
    )
    return float(priced.total_price)


def ours(model: str, usage: dict[str, int], lane: Lane = "realtime") -> float:
    return cost_usd(
        model, usage["input"], usage["output"], usage["cache_read"], usage["cache_write"], lane=lane
    )


# A report-sized call: well below the 200k-token prompts some models price higher.
USAGE = {"input": 3000, "output": 2000, "cache_read": 5000, "cache_write": 7000}


@pytest.mark.parametrize("model", MODELS)
def test_every_family_costs_what_the_maintained_price_list_says_cache_reads_and_writes_included(
    model: str,
) -> None:
    assert ours(model, USAGE) == pytest.approx(listed_usd(model, USAGE), rel=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_batch_usage_costs_half_of_everything_as_the_list_has_it_where_it_lists_batch_rates(
    model: str,
) -> None:
    assert ours(model, USAGE, "batch") == pytest.approx(ours(model, USAGE) / 2, rel=1e-9)
    listed_batch = listed_usd(model, USAGE, batch=True)
    if listed_batch != pytest.approx(listed_usd(model, USAGE)):  # retired models have no batch row there
        assert ours(model, USAGE, "batch") == pytest.approx(listed_batch, rel=1e-9)


def test_the_default_models_are_priced_as_anthropic_s_pricing_page_lists_them() -> None:
    # USD per million tokens: base input, output, 5-minute cache write, cache hit (platform.claude.com
    # pricing page): Opus 4.7 $5 / $25 / $6.25 / $0.50, Haiku 4.5 $1 / $5 / $1.25 / $0.10.
    assert model_prices("claude-opus-4-7") == ModelPrices(5.0, 25.0, 0.5, 6.25)
    assert model_prices("claude-haiku-4-5-20251001") == ModelPrices(1.0, 5.0, 0.1, 1.25)
    assert model_prices("claude-haiku-4-5-20251001", "batch") == ModelPrices(0.5, 2.5, 0.05, 0.625)


def test_one_report_s_cost_splits_its_input_by_how_the_cache_served_it() -> None:
    # 2,000 uncached input tokens, 3,000 read from the cache, 1,000 written, 800 output, Haiku 4.5.
    realtime = cost_usd(
        "claude-haiku-4-5-20251001", 2000, 800, cache_read_tokens=3000, cache_write_tokens=1000
    )
    assert realtime == pytest.approx((2000 * 1.0 + 800 * 5.0 + 3000 * 0.1 + 1000 * 1.25) / MILLION)
    batch = cost_usd("claude-haiku-4-5-20251001", 2000, 800, 3000, 1000, lane="batch")
    assert batch == pytest.approx(realtime / 2)
    assert cost_usd("gpt-unknown", 1000, 1000) == 0.0 and model_prices("gpt-unknown") is None


@pytest.mark.parametrize("model", MODELS)
def test_every_price_survives_the_ledger_s_integer_nano_usd_per_token(model: str) -> None:
    lanes: tuple[Lane, ...] = ("realtime", "batch")
    for lane in lanes:
        prices = model_prices(model, lane)
        assert prices is not None
        for usd_per_million in (prices.input, prices.output, prices.cache_read, prices.cache_write):
            nano = nano_usd_per_token(usd_per_million)
            # Never below the price, and at most half a nano-dollar above it (the cheapest
            # price listed, a batch cache read of Haiku 5.5, is 5 nano-USD a token).
            assert 0 <= nano * 1000 - usd_per_million * MILLION <= 500 and nano >= 5
