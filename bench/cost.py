"""Cost per 1,000 reports: one input mix (``bench.cost_inputs``) through the real service (the
Procfile's web and worker processes, an embedded Redis) against a fake Anthropic in its own process,
priced from what the fake billed, token kind by token kind, with the public price list
(``service.telemetry.pricing``). Scaled down to ``REPORTS`` reports so a row runs in about a minute;
the figures are per 1,000.

Every row submits the same reports, and retries the same ``RETRY_RATE`` of its POSTs as a client does
after a gateway's 504. Ours sends the retry with the same ``Idempotency-Key``: a replay, billed once.
The seed post's design (BullMQ-style) reuses no key, so its retry is a second job, billed again.

A row is a ``Scenario``: service settings and extra fields of each POST. The batch lane's row submits
``"lane": "batch"``; it is measured only when the service accepts the field and answers with
``result.lane == "batch"``, and reported as not measured otherwise (never estimated).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.cost_inputs import Input, input_mix
from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.providers.prompt import PromptCachePolicy, system_prompt_tokens
from service.store.connection import open_redis
from service.store.keys import KeyStore
from service.telemetry.pricing import model_prices

ROOT = Path(__file__).resolve().parent.parent
REPORTS = 100
RETRY_RATE = 0.05  # one POST in twenty retried after a 504 (see the section for why)
REPLY_TOKENS = 1_000  # the fake's answer: a report of about 4,000 characters
WORKERS, SLOTS = 2, 10
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass(frozen=True)
class Scenario:
    name: str
    env: dict[str, str] = field(default_factory=dict)  # the service's settings for this row
    body: dict[str, str] = field(default_factory=dict)  # extra fields of every POST /api/reports
    reuse_key: bool = True  # a retried POST carries the same Idempotency-Key


SCENARIOS = (
    Scenario("realtime"),
    # Marked for the cache whatever its length: the provider caches a prefix from 1,024 tokens only.
    Scenario(
        "realtime + prompt cache",
        env={"PROMPT_CACHE_MIN_TOKENS": "0", "PROMPT_CACHE_MIN_TOKENS_HAIKU": "0"},
    ),
    Scenario("seed post's design (BullMQ-style, no key reuse)", reuse_key=False),
    Scenario("batch", env={"BATCH_WINDOW_SECONDS": "2"}, body={"lane": "batch"}),
)


def service_env(
    redis_url: str, data_dir: Path, fake_url: str, port: int, extra: dict[str, str]
) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "ANTHROPIC_API_KEY": "sk-ant-cost",
        "ANTHROPIC_BASE_URL": fake_url,
        "WORKER_CONCURRENCY": str(SLOTS),
        "USER_MAX_ACTIVE_PRO": "0",
        "UPLOADS_PER_MINUTE_PRO": "0",
        "SUBMISSIONS_PER_MINUTE_PRO": "0",
        "BUDGET_TOKENS_PRO": "0",
        "LLM_REQUESTS_PER_MINUTE": "1000000",
        "LLM_INPUT_TOKENS_PER_MINUTE": "1000000000",
        "LLM_OUTPUT_TOKENS_PER_MINUTE": "1000000000",
        "LOG_LEVEL": "warning",
        **extra,
    }


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


async def api_key(redis_url: str) -> str:
    client = open_redis(redis_url, fail_fast=True)
    try:
        key, _ = await KeyStore(client).create("cost-bench", "pro")
        return key
    finally:
        await client.aclose()


async def submit(http: httpx.AsyncClient, scenario: Scenario, inputs: list[Input]) -> list[str] | None:
    """Uploads and submits every report, and retries every twentieth POST as a client does after a
    504; None when the service refuses the scenario's fields (a lane this build does not have)."""
    job_ids: list[str] = []
    every = round(1 / RETRY_RATE)
    for n, item in enumerate(inputs):
        uploaded = await http.post("/api/inputs", params={"name": item.name}, content=item.body,
                                   headers={"Content-Type": item.content_type})  # fmt: skip
        uploaded.raise_for_status()
        body = {"inputDataUrl": uploaded.json()["inputDataUrl"], **scenario.body}
        first = await http.post("/api/reports", json=body, headers={"Idempotency-Key": f"cost-{n:05d}"})
        if first.status_code == 400 and scenario.body:
            return None
        first.raise_for_status()
        job_ids.append(first.json()["jobId"])
        if n % every == every - 1:  # the client never saw the 202: it sends the POST again
            key = f"cost-{n:05d}" if scenario.reuse_key else f"cost-{n:05d}-retry"
            again = await http.post("/api/reports", json=body, headers={"Idempotency-Key": key})
            again.raise_for_status()
            job_ids.append(again.json()["jobId"])
    return sorted(set(job_ids))


async def finished(http: httpx.AsyncClient, job_ids: list[str], limit_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit_s
    while True:
        states = [(await http.get(f"/api/reports/{job_id}")).json() for job_id in job_ids]
        if all(s["state"] in TERMINAL for s in states) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(1.0)


async def drive(url: str, redis_url: str, fake_url: str, scenario: Scenario) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {await api_key(redis_url)}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        job_ids = await submit(http, scenario, input_mix(REPORTS))
        if job_ids is None:
            return None
        states = await finished(http, job_ids, limit_s=900)
        usage = (await http.get("/api/usage")).json()
    lane = scenario.body.get("lane")
    if lane and not all((s.get("result") or {}).get("lane") == lane for s in states):
        return None  # the field was accepted but not honoured: nothing to report as that lane
    async with httpx.AsyncClient(base_url=fake_url) as fake:
        bill = (await fake.get("/_fake/stats")).json()
    return {"states": states, "usage": usage, "bill": bill}


def wait_ready(url: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not become ready")


def run(scenario: Scenario) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", appendonly=False) as redis:
        fake_port, web_port = free_port(), free_port()
        fake_url, url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{web_port}"
        env = service_env(redis.url, Path(tmp) / "data", fake_url, web_port, scenario.env)
        fake = [sys.executable, "-m", "tests.fakes.anthropic_cli", "--port", str(fake_port),
                "--first-byte-delay", "0.2", "--reply-tokens", str(REPLY_TOKENS), "--chunk-chars", "400"]  # fmt: skip
        web = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
               "--host", "127.0.0.1", "--port", str(web_port)]  # fmt: skip
        worker = [sys.executable, "-m", "arq", "worker_settings.WorkerSettings"]
        quiet = {"cwd": ROOT, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        processes = [subprocess.Popen(command, **quiet) for command in (fake, web, *[worker] * WORKERS)]  # type: ignore[call-overload]
        try:
            wait_ready(url)
            return asyncio.run(drive(url, redis.url, fake_url, scenario))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    lines, states = result["bill"]["bill"], result["states"]

    def per_report(kind: str) -> float:
        return sum(int(line[kind]) for line in lines) / REPORTS

    kinds = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
    billed = sum(int(line[kind]) for line in lines for kind in kinds)
    return {
        "completed": sum(1 for s in states if s["state"] == "completed"),
        "jobs": len(states),
        "calls": result["bill"]["calls"],
        "input": per_report("input_tokens"),
        "cache_write": per_report("cache_write_tokens"),
        "cache_read": per_report("cache_read_tokens"),
        "output": per_report("output_tokens"),
        "usd_per_1000": priced(lines) * 1000 / REPORTS,
        "usage_matches_bill": result["usage"]["tokensUsed"] == billed,
    }


def measure_cost() -> dict[str, dict[str, Any] | None]:
    rows: dict[str, dict[str, Any] | None] = {}
    for scenario in SCENARIOS:
        result = run(scenario)
        rows[scenario.name] = None if result is None else summary(result)
    return rows


def _row(name: str, r: dict[str, Any] | None, base: float) -> str:
    if r is None:
        return (
            f'| {name} | not measured: this build does not accept `"lane": "batch"` (the batch-lane '
            "branch adds it; this row then runs as it stands) | | | | | |"
        )
    tokens = f"{r['input']:,.0f} / {r['cache_write']:,.0f} / {r['cache_read']:,.0f} / {r['output']:,.0f}"
    matches = "yes" if r["usage_matches_bill"] else "no"
    return (
        f"| {name} | ${r['usd_per_1000']:.2f} | {r['usd_per_1000'] / base:.2f} | {r['jobs']} "
        f"({r['completed']} completed) | {r['calls']} | {tokens} | {matches} |"
    )


def cost_section(machine: str) -> str:
    rows = measure_cost()
    base = (rows["realtime"] or {}).get("usd_per_1000") or 1.0
    table = "\n".join(_row(name, r, base) for name, r in rows.items())
    per_retry, cache = base * 0.01, PromptCachePolicy()
    return f"""## Cost per 1,000 reports

Measured {machine}.
{REPORTS} reports of one input mix (`bench/cost_inputs.py`: half CSV exports, three in ten JSON dumps,
two in ten text notes, 1 to 30 kB), from one pro user (`claude-opus-4-7`), uploaded and submitted over
HTTP to the Procfile's web process, run by {WORKERS} worker processes against a fake Anthropic that
answers about {REPLY_TOKENS:,} tokens each; priced from the fake's bill, each kind of token at its
public price (`service/telemetry/pricing.py`; the batch lane at its own). Scaled down to {REPORTS}
reports so a row runs in about a minute; the figures are per 1,000 (x{1000 // REPORTS}). Each row
retries {RETRY_RATE:.0%} of its POSTs, as a client does that got a gateway's 504 for a POST whose job
was in fact created. Command: `python -m bench cost`.

| design | USD per 1,000 reports | vs realtime | jobs run for {REPORTS} reports | provider calls | tokens per report: input / cache write / cache read / output | usage = bill |
|---|---|---|---|---|---|---|
{table}

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
- **usage = bill**: the service's own `tokensUsed` (`GET /api/usage`) equals the tokens the fake billed.
"""
