"""The cost benchmark's figures and its RESULTS.md section: each row priced from the fake's bill,
checked against the service's own usage, and the batch row compared with the realtime row report by
report, on the same inputs (``bench.cost`` runs them)."""

from __future__ import annotations

from typing import Any

from bench.cost import REPLY_TOKENS, REPORTS, RETRY_RATE, SLOTS, WORKERS, measure_cost
from service.providers.prompt import PromptCachePolicy, system_prompt_tokens
from service.telemetry.pricing import model_prices

KINDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
# What a batch report must share with the realtime report of the same input.
SAME_STATUS = ("state", "stage", "progress", "error")
SAME_RESULT = ("model", "inputTokens", "outputTokens", "tokensUsed", "cacheReadTokens", "cacheWriteTokens")
SAME_USAGE = ("reports", "inputTokens", "outputTokens", "tokensUsed", "cacheReadTokens", "cacheWriteTokens")


def priced(lines: list[dict[str, Any]]) -> float:
    """The fake's bill in USD at the public prices (batch lines at the batch lane's)."""
    total = 0.0
    for line in lines:
        prices = model_prices(str(line["model"]), "batch" if line["lane"] == "batch" else "realtime")
        if prices is None:
            raise ValueError(f"no public price for {line['model']!r}")
        total += (
            line["input_tokens"] * prices.input
            + line["cache_write_tokens"] * prices.cache_write
            + line["cache_read_tokens"] * prices.cache_read
            + line["output_tokens"] * prices.output
        ) / 1_000_000
    return total


def usage_matches(usage: dict[str, Any], lines: list[dict[str, Any]], usd: float) -> bool:
    """The service's ``GET /api/usage`` says what the provider billed: every token, each cache kind,
    and the price to the microdollar it rounds to."""
    billed = {kind: sum(int(line[kind]) for line in lines) for kind in KINDS}
    said = (int(usage["tokensUsed"]), int(usage["cacheReadTokens"]), int(usage["cacheWriteTokens"]))
    bill = (sum(billed.values()), billed["cache_read_tokens"], billed["cache_write_tokens"])
    return said == bill and abs(float(usage["costUsd"]) - usd) <= 2e-6


def summary(result: dict[str, Any]) -> dict[str, Any]:
    lines, states, reports = result["bill"]["bill"], result["states"], int(result["reports"])

    def per_report(kind: str) -> float:
        return sum(int(line[kind]) for line in lines) / reports

    usd = priced(lines)
    return {
        "reports": reports,
        "completed": sum(1 for s in states if s["state"] == "completed"),
        "jobs": len(states),
        "calls": result["bill"]["calls"],
        "batches": result["bill"].get("batches", 0),
        "batch_requests": result["bill"].get("batch_requests", 0),
        "input": per_report("input_tokens"),
        "cache_write": per_report("cache_write_tokens"),
        "cache_read": per_report("cache_read_tokens"),
        "output": per_report("output_tokens"),
        "usd": usd,
        "usd_per_1000": usd * 1000 / reports,
        "usage_usd": result["usage"]["costUsd"],
        "usage_matches_bill": usage_matches(result["usage"], lines, usd),
        "submit_s": result["submit_s"],
        "run_s": result["run_s"],
    }


def _same(realtime: dict[str, Any], batch: dict[str, Any]) -> bool:
    mine, theirs = realtime.get("result") or {}, batch.get("result") or {}
    return (
        all(realtime.get(name) == batch.get(name) for name in SAME_STATUS)
        and bool(mine)
        and all(mine.get(name) == theirs.get(name) for name in SAME_RESULT)
    )


def versus(realtime: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    """The batch row against the realtime row, input by input: how many finished the same, what
    their results cost, batch over realtime, and whether the two users' usage is the same."""
    pairs = list(zip(realtime["by_input"], batch["by_input"], strict=True))
    priced_pairs = [(r["result"]["costUsd"], b["result"]["costUsd"]) for r, b in pairs if _same(r, b)]
    realtime_usd = sum(r for r, _ in priced_pairs)
    mine, theirs = realtime["usage"], batch["usage"]
    return {
        "inputs": len(pairs),
        "same": len(priced_pairs),
        "ratio": sum(b for _, b in priced_pairs) / realtime_usd if realtime_usd else float("nan"),
        "same_usage": all(mine[name] == theirs[name] for name in SAME_USAGE),
        "usage_ratio": theirs["costUsd"] / mine["costUsd"] if mine["costUsd"] else float("nan"),
    }


def _row(name: str, r: dict[str, Any] | None, base: float) -> str:
    if r is None:
        return (
            f'| {name} | not measured: this build does not accept `"lane": "batch"` (the batch-lane '
            "branch adds it; this row then runs as it stands) | | | | | | | |"
        )
    tokens = f"{r['input']:,.0f} / {r['cache_write']:,.0f} / {r['cache_read']:,.0f} / {r['output']:,.0f}"
    matches = "yes" if r["usage_matches_bill"] else "no"
    scale = "" if r["reports"] == 1000 else f" (x{1000 / r['reports']:g})"
    return (
        f"| {name} | {r['reports']:,}{scale} | ${r['usd_per_1000']:.2f} | {r['usd_per_1000'] / base:.3f} "
        f"| {r['jobs']:,} ({r['completed']:,} completed) | {r['calls']:,} / {r['batches']:,} ({r['batch_requests']:,}) "
        f"| {tokens} | {matches} "
        f"| {r['run_s']:.0f} s |"
    )


def cost_section(machine: str, reports: int = REPORTS) -> str:
    raw = measure_cost(reports)
    rows = {name: None if result is None else summary(result) for name, result in raw.items()}
    realtime = rows["realtime"]
    base = (realtime or {}).get("usd_per_1000") or 1.0
    table = "\n".join(_row(name, r, base) for name, r in rows.items())
    per_retry, cache = base * 0.01, PromptCachePolicy()
    return f"""## Cost per 1,000 reports

Measured {machine}.
One input mix (`bench/cost_inputs.py`: half CSV exports, three in ten JSON dumps, two in ten text
notes, 1 to 30 kB), from one pro user (`claude-opus-4-7`), uploaded and submitted over HTTP to the
Procfile's web process, run by {WORKERS} worker processes ({SLOTS} jobs each) on an embedded Redis against
a fake Anthropic (its own process) that answers about {REPLY_TOKENS:,} tokens each; priced from the
fake's bill, each kind of token at its public price (`service/telemetry/pricing.py`; the batch lane
at its own). Each row retries {RETRY_RATE:.0%} of its POSTs, as a client does that got a gateway's 504
for a POST whose job was in fact created. Command: `python -m bench cost`.

{_scale(reports)} The rows took {sum(r["run_s"] for r in rows.values() if r) / 60:.0f} minutes in all
(wall time, each row's uploads and POSTs, made one at a time, included).

| design | reports run | USD per 1,000 reports | vs realtime | jobs run | provider calls: realtime / batches (requests in them) | tokens per report: input / cache write / cache read / output | usage = bill | wall time |
|---|---|---|---|---|---|---|---|---|
{table}

{_batch_notes(raw, rows)}
- **The retry rate** ({RETRY_RATE:.0%}) is our assumption, not a measurement: no figure is published for
  the seed post's design. It stands for a bad hour behind a gateway timeout (a stalled Redis, a
  deploy, a burst) in which one POST in twenty is answered 504 after its job was enqueued and the
  client sends it again. The seed design pays for every such retry in full: each point of retry rate
  adds 1% to its bill (about ${per_retry:.2f} per 1,000 reports here; at 1% it would be
  ${base * 1.01:.2f}, at 10% ${base * 1.10:.2f}). Ours answers the retry as a replay (`200`,
  `Idempotent-Replayed: true`): no second job, no second call, whatever the rate.
- **The prompt cache** saves nothing on this service's prompt, and the row shows it: the only fixed
  prefix is the system prompt (at most {system_prompt_tokens()} tokens, estimated on the high side),
  under every model's shortest cacheable prefix ({cache.min_tokens:,} tokens for Opus and Sonnet,
  {cache.min_tokens_haiku:,} for Haiku). Marked or not (this row forces the mark with
  `PROMPT_CACHE_MIN_TOKENS=0`), the provider serves it uncached; the service marks it by default only
  from those minimums, so a longer prefix (a house style guide, say) would be cached at once.
- **usage = bill**: the service's own `GET /api/usage` equals the fake's bill: `tokensUsed`,
  `cacheReadTokens` and `cacheWriteTokens` to the token, `costUsd` to the microdollar.
"""


def _scale(reports: int) -> str:
    if reports == 1000:
        return "Every row runs all 1,000 reports: the figures are measured, not scaled."
    return f"Every row runs {reports:,} reports, its figures scaled x{1000 / reports:g} to 1,000."


def _batch_notes(raw: dict[str, Any], rows: dict[str, dict[str, Any] | None]) -> str:
    realtime, batch = rows["realtime"], rows["batch"]
    if realtime is None or batch is None:
        return ""
    v = versus(raw["realtime"], raw["batch"])
    same_usage = "the same" if v["same_usage"] else "not the same"
    return (
        f"- **The batch lane at {batch['reports']:,}**: {batch['completed']:,} of {batch['jobs']:,} jobs "
        f"completed, billed ${batch['usd']:.2f} against ${realtime['usd']:.2f} for the same reports in "
        f"realtime ({batch['usd'] / realtime['usd']:.3f}). Input by input, {v['same']:,} of {v['inputs']:,} "
        "batch reports ended as their realtime report did (state, stage, progress, error; model, input, "
        f"output and cache tokens), and their results' `costUsd` comes to {v['ratio']:.3f} of the realtime "
        f"ones'. The batch user's `GET /api/usage` shows {same_usage} reports and tokens (input, output, "
        f"cache reads and writes) as the realtime user's, and `costUsd` {v['usage_ratio']:.3f} of theirs."
    )
