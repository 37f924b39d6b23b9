"""Cost per 1,000 reports: one input mix (``bench.cost_inputs``) through the real service (the
Procfile's web and worker processes, an embedded Redis) against a fake Anthropic in its own process,
priced from what the fake billed, token kind by token kind, with the public price list
(``service.telemetry.pricing``).

Every row runs the whole thousand (``REPORTS``), measured, not scaled: on this machine a row takes
a minute or two, most of it the thousand uploads and POSTs. The batch row is compared with the
realtime row report by report (the same inputs, in the same run): same state, stage, progress and
tokens, and what each result cost. ``python -m bench.cost --reports N`` runs N of each and prints
the figures, for a quick look.

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
from service.store.connection import open_redis
from service.store.keys import KeyStore

ROOT = Path(__file__).resolve().parent.parent
REPORTS = 1_000
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
    # A window of 5 s: the thousand submissions, a minute or so of POSTs, go in several batches.
    Scenario("batch", env={"BATCH_WINDOW_SECONDS": "5"}, body={"lane": "batch"}),
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


async def api_key(redis_url: str) -> str:
    client = open_redis(redis_url, fail_fast=True)
    try:
        key, _ = await KeyStore(client).create("cost-bench", "pro")
        return key
    finally:
        await client.aclose()


@dataclass
class Submitted:
    first: list[str] = field(default_factory=list)  # the job of each input's first POST, in mix order
    every: set[str] = field(default_factory=set)  # every job the POSTs made (a retry may make one more)


async def submit(http: httpx.AsyncClient, scenario: Scenario, inputs: list[Input]) -> Submitted | None:
    """Uploads and submits every report, and retries every twentieth POST as a client does after a
    504; None when the service refuses the scenario's fields (a lane this build does not have)."""
    jobs = Submitted()
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
        jobs.first.append(first.json()["jobId"])
        if n % every == every - 1:  # the client never saw the 202: it sends the POST again
            key = f"cost-{n:05d}" if scenario.reuse_key else f"cost-{n:05d}-retry"
            again = await http.post("/api/reports", json=body, headers={"Idempotency-Key": key})
            again.raise_for_status()
            jobs.every.add(again.json()["jobId"])
    jobs.every.update(jobs.first)
    return jobs


async def listed(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every job of the caller, by id, as the listing answers (a page of 100 per request: polling
    a thousand jobs one GET each would load the API more than the jobs do)."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/api/reports", params=params)).json()
        found.update((item["jobId"], item) for item in page["items"])
        cursor = page["nextCursor"]
        if not cursor:
            return found


async def finished(http: httpx.AsyncClient, job_ids: set[str], limit_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + limit_s
    while True:
        states = await listed(http)
        done = all(states.get(job_id, {}).get("state") in TERMINAL for job_id in job_ids)
        if done or time.monotonic() > deadline:
            return {job_id: states.get(job_id, {"state": "missing"}) for job_id in job_ids}
        await asyncio.sleep(2.0)


async def drive(
    url: str, redis_url: str, fake_url: str, scenario: Scenario, reports: int
) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {await api_key(redis_url)}"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        jobs = await submit(http, scenario, input_mix(reports))
        if jobs is None:
            return None
        submitted = time.monotonic()
        states = await finished(http, jobs.every, limit_s=1800)
        usage = (await http.get("/api/usage")).json()
    ended = time.monotonic()
    lane = scenario.body.get("lane")
    if lane and not all((s.get("result") or {}).get("lane") == lane for s in states.values()):
        return None  # the field was accepted but not honoured: nothing to report as that lane
    async with httpx.AsyncClient(base_url=fake_url) as fake:
        bill = (await fake.get("/_fake/stats")).json()
    return {
        "reports": reports,
        "states": list(states.values()),
        "by_input": [states[job_id] for job_id in jobs.first],
        "usage": usage,
        "bill": bill,
        "submit_s": submitted - started,
        "run_s": ended - started,
    }


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


def run(scenario: Scenario, reports: int = REPORTS) -> dict[str, Any] | None:
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
            return asyncio.run(drive(url, redis.url, fake_url, scenario, reports))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def measure_cost(reports: int = REPORTS) -> dict[str, dict[str, Any] | None]:
    """Each row's raw run (None: the build does not have its lane), one after the other."""
    return {scenario.name: run(scenario, reports) for scenario in SCENARIOS}


if __name__ == "__main__":
    import argparse

    from bench.cost_report import summary  # it imports this module: not at the top

    parser = argparse.ArgumentParser(description="cost per 1,000 reports; prints each row's figures")
    parser.add_argument("--reports", type=int, default=REPORTS)
    args = parser.parse_args()
    for name, result in measure_cost(args.reports).items():
        print(name, None if result is None else summary(result))
