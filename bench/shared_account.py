"""A provider account shared with another application: a fake Anthropic in its own process enforcing
an input-token limit, another application (this process, calling the fake directly) spending half of
it at a steady pace, and three of the service's real arq worker processes sharing one Redis limiter,
600 report jobs queued ahead of them.

Two runs of the same fleet, each on a fresh account and Redis, one after the other in this run: the
workers as they ship (``LLM_FOLLOW_PROVIDER_LIMITS=true``: the provider's ``anthropic-ratelimit-*``
headers folded into the shared buckets after every response, ``service.worker.capacity``), and, as
the baseline, the same workers with the setting off (their own books only).

Reported for each: the share of the capacity the other application leaves that the fleet uses, once
the first seconds are over (goal >= 90%), and the provider's 429s to the fleet, as a share of its
calls (goal <= 1%), the first contact included. ``python -m bench shared_account`` writes the
RESULTS.md section; ``python -m bench.shared_account`` prints the raw figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.streams import fake_stats, submit_all
from service.dev.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
ITPM = 120_000  # the account's input tokens per minute: 2,000 a second
OTHER_SHARE, OTHER_CALL_TOKENS = 0.5, 250
WORKERS, SLOTS = 3, 10
WARM_UP_S, MEASURE_S = 15.0, 60.0


def fleet_env(redis_url: str, data_dir: Path, fake_url: str, follow: bool) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "ANTHROPIC_API_KEY": "sk-ant-shared-account",
        "ANTHROPIC_BASE_URL": fake_url,
        "WORKER_CONCURRENCY": str(SLOTS),
        "MAX_OUTPUT_TOKENS": "200",
        "LLM_REQUESTS_PER_MINUTE": "100000",
        "LLM_INPUT_TOKENS_PER_MINUTE": str(ITPM),  # configured as the account's, as usual
        "LLM_OUTPUT_TOKENS_PER_MINUTE": "100000000",
        "USER_MAX_ACTIVE_FREE": "0",
        "USER_MAX_ACTIVE_PRO": "0",
        "LLM_FOLLOW_PROVIDER_LIMITS": "true" if follow else "false",
        "LOG_LEVEL": "warning",
    }


class OtherApplication:
    """Spends its share of the account with calls of its own, at a steady pace; counts its 429s."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.admitted_tokens = self.refused = self.calls = 0

    async def run(self, seconds: float) -> None:
        headers = {"x-api-key": "sk-ant-other-application", "anthropic-version": "2023-06-01"}
        pace = OTHER_CALL_TOKENS / (ITPM / 60 * OTHER_SHARE)
        async with httpx.AsyncClient(base_url=self._url, headers=headers, timeout=30) as http:
            await self._send(http, ITPM - 1000)  # a busy account: its starting burst is already spent
            deadline, next_at = time.monotonic() + seconds, time.monotonic()
            sent: list[asyncio.Task[None]] = []
            while next_at < deadline:  # calls overlap: each takes the fake's latency
                sent.append(asyncio.create_task(self._send(http, OTHER_CALL_TOKENS)))
                next_at += pace
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*sent)

    async def _send(self, http: httpx.AsyncClient, tokens: int) -> None:
        content = "x" * (4 * tokens)
        body = {"model": "claude-bench", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
        response = await http.post("/v1/messages", json=body)
        self.calls += 1
        if response.status_code == 429:
            self.refused += 1
        else:
            self.admitted_tokens += tokens


async def observe(fake_url: str, other: OtherApplication) -> dict[str, Any]:
    """Runs the other application; reads the fake's books when the warm-up ends and at the end."""
    spending = asyncio.create_task(other.run(WARM_UP_S + MEASURE_S))
    await asyncio.sleep(WARM_UP_S)
    start = fake_stats(fake_url), other.admitted_tokens, other.refused, other.calls
    await asyncio.sleep(MEASURE_S)
    end = fake_stats(fake_url), other.admitted_tokens, other.refused, other.calls
    await spending
    theirs = end[1] - start[1]
    ours = (end[0]["billed_input"] - start[0]["billed_input"]) - theirs
    left = ITPM / 60 * MEASURE_S - theirs
    ours_calls = end[0]["calls"] - other.calls  # the whole run, its first contact included
    return {
        "share_of_what_is_left": round(ours / left, 3),
        "other_got_its_share": round(theirs / (ITPM / 60 * MEASURE_S * OTHER_SHARE), 3),
        "fleet_calls": ours_calls,
        "fleet_429s": end[0]["rate_limited"] - other.refused,
        "other_429s": other.refused,
        "fleet_calls_measured": (end[0]["calls"] - start[0]["calls"]) - (end[3] - start[3]),
        "fleet_429s_measured": (end[0]["rate_limited"] - start[0]["rate_limited"]) - (end[2] - start[2]),
    }


def start_fleet(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "arq", "worker_settings.WorkerSettings"]  # the Procfile's worker
    return [
        subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(WORKERS)
    ]


def measure(follow: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", appendonly=False) as redis:
        data_dir, port = Path(tmp) / "data", free_port()
        fake_url = f"http://127.0.0.1:{port}"
        fake_command = [sys.executable, "-m", "tests.fakes.anthropic_cli", "--port", str(port),
                        "--first-byte-delay", "0.5", "--reply-tokens", "100", "--chunk-chars", "100",
                        "--itpm", str(ITPM)]  # fmt: skip
        fake = subprocess.Popen(fake_command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = fleet_env(redis.url, data_dir, fake_url, follow)
        asyncio.run(submit_all(redis.url, data_dir, 600))  # more than the run can answer
        time.sleep(2)  # the fake listens
        fleet = start_fleet(env)
        try:
            result = asyncio.run(observe(fake_url, OtherApplication(fake_url)))
        finally:
            for process in [*fleet, fake]:
                process.terminate()
            for process in [*fleet, fake]:
                process.wait(60)
        result["fleet_429_share"] = round(result["fleet_429s"] / max(1, result["fleet_calls"]), 4)
        return result


def shared_account_section(machine: str) -> str:
    follows, own_books = measure(follow=True), measure(follow=False)

    def row(name: str, r: dict[str, Any]) -> str:
        return (
            f"| {name} | {r['share_of_what_is_left']:.1%} | {r['fleet_429s']} of {r['fleet_calls']} "
            f"({r['fleet_429_share']:.1%}) | {r['fleet_429s_measured']} of {r['fleet_calls_measured']} "
            f"| {r['other_got_its_share']:.1%} | {r['other_429s']} |"
        )

    def verdict(r: dict[str, Any]) -> str:
        met = r["share_of_what_is_left"] >= 0.9 and r["fleet_429_share"] <= 0.01
        return "meets both goals" if met else "misses a goal"

    return f"""## A shared account: the fleet and another application on one provider limit

Measured {machine}.
A fake Anthropic in its own process enforces {ITPM:,} input tokens per minute; another application
spends half of it at a steady pace ({OTHER_CALL_TOKENS}-token calls, its opening burst already spent);
three of the service's arq worker processes ({SLOTS} jobs each, the Procfile's command) work through
600 queued reports with the same limit configured (`LLM_INPUT_TOKENS_PER_MINUTE`), answers after
0.5 s. Each fleet runs {MEASURE_S:g} s after a {WARM_UP_S:g} s warm-up on a fresh account and Redis, both
in this run. Command: `python -m bench shared_account`.

| workers | share of what the other application leaves, used (goal >= 90%) | provider 429s to the fleet, whole run (goal <= 1%) | 429s while measured | the other application's share received | its 429s |
|---|---|---|---|---|---|
{row("as shipped: folding the provider's headers", follows)}
{row("baseline: `LLM_FOLLOW_PROVIDER_LIMITS=false`", own_books)}

As shipped: {verdict(follows)}. The baseline's own books say the account is the fleet's alone, so it
spends what the other application already took and collects the provider's 429s (each pauses the
model for its `retry-after`).
"""


if __name__ == "__main__":
    print(json.dumps({"folding": measure(follow=True), "own_books": measure(follow=False)}, indent=2))
