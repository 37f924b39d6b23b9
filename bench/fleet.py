"""A fleet under pressure: three worker processes, a fake provider with 2 s latency that enforces its
own RPM and token limits, and 300 jobs from 30 users (half free, half pro) submitted at once.

Reported: the share of the provider's request budget used once the initial burst is spent (goal
>= 95%), the provider's 429s (goal 0), queue wait p50/p95 per plan, and the most jobs any one user
had running at once (the cap is 2 for free users, 5 for pro users).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.streams import fake_stats
from service.core.settings import Settings
from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.storage.local import LocalStorage
from service.store.connection import open_redis
from service.store.job_types import NewJob, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id
from service.store.policies import queue_score
from service.store.uploads import Upload, UploadStore, new_upload_id, storage_key

ROOT = Path(__file__).resolve().parent.parent
RPM, ITPM, OTPM = 120, 400_000, 80_000
USERS, JOBS, WORKERS = 30, 300, 3
OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="bench")
CSV = b"region,revenue\nnorth,1200\nsouth,980\neast,1500\nwest,1100\n"


def fleet_env(redis_url: str, data_dir: Path, fake_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "ANTHROPIC_API_KEY": "sk-ant-fleet",
        "ANTHROPIC_BASE_URL": fake_url,
        "WORKER_CONCURRENCY": "10",
        "MAX_OUTPUT_TOKENS": "1000",
        "LLM_REQUESTS_PER_MINUTE": str(RPM),
        "LLM_INPUT_TOKENS_PER_MINUTE": str(ITPM),
        "LLM_OUTPUT_TOKENS_PER_MINUTE": str(OTPM),
        "LOG_LEVEL": "warning",
    }


async def submit_all(redis_url: str, data_dir: Path) -> list[str]:
    client = open_redis(redis_url, fail_fast=False)
    store, uploads, settings = JobStore(client), UploadStore(client), Settings()
    job_ids = []
    for number in range(JOBS):
        user = f"user-{number % USERS:02d}"
        plan = "pro" if number % USERS < USERS // 2 else "free"
        upload = Upload(new_upload_id(), user, "text/csv", "sales.csv", len(CSV), int(time.time() * 1000))
        await LocalStorage(data_dir / "files").put(storage_key(upload.input_id), CSV, "text/csv")
        await uploads.record(upload, ttl_seconds=3600)
        job_id = derive_job_id(user, str(number))
        score = queue_score(settings, plan, int(time.time() * 1000))
        new = NewJob(job_id, user, plan, upload.url, "claude-bench", "fp")  # one model: one set of limits
        await store.submit(new, OPEN, keep_ms=3_600_000, score_ms=score)
        job_ids.append(job_id)
    await client.aclose()
    return job_ids


async def watch(redis_url: str, job_ids: list[str], limit_s: float) -> tuple[list[dict[str, str]], int]:
    """Polls until every job is finished; meanwhile samples each user's running jobs."""
    client: Redis = open_redis(redis_url, fail_fast=False)
    most_active = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        async with client.pipeline(transaction=False) as pipe:
            for user in range(USERS):
                pipe.zcard(f"rs:active:user-{user:02d}")
            most_active = max(most_active, *await pipe.execute())
        async with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(f"rs:job:{job_id}")
            records: list[dict[str, str]] = await pipe.execute()
        if all(r.get("state") in ("completed", "failed") for r in records):
            break
        await asyncio.sleep(0.1)
    await client.aclose()
    return records, most_active


def summarize(records: list[dict[str, str]], most_active: int, stats: dict[str, int]) -> dict[str, Any]:
    waits: dict[str, list[float]] = {"pro": [], "free": []}
    for record in records:
        waits[record["plan"]].append((int(record["started_ms"]) - int(record["created_ms"])) / 1000)
    finished = sorted(int(r["finished_ms"]) for r in records if r.get("state") == "completed")
    # The first minute's bucket is a burst; after it the fleet can only go at the refill rate.
    steady = [t for t in finished if finished[0] + 40_000 <= t <= finished[-1] - 5_000]
    rate = (len(steady) - 1) / ((steady[-1] - steady[0]) / 1000) if len(steady) > 1 else 0.0

    def percentile(values: list[float], share: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 1) if ordered else 0.0

    return {
        "completed": len(finished),
        "provider_calls": stats["calls"],
        "provider_429s": stats["rate_limited"],
        "steady_calls_per_s": round(rate, 3),
        "budget_share": round(rate / (RPM / 60), 3),
        "wait_pro_p50_s": round(statistics.median(waits["pro"]), 1),
        "wait_pro_p95_s": percentile(waits["pro"], 0.95),
        "wait_free_p50_s": round(statistics.median(waits["free"]), 1),
        "wait_free_p95_s": percentile(waits["free"], 0.95),
        "most_active_one_user": most_active,
        "duration_s": round((finished[-1] - finished[0]) / 1000, 1) if finished else 0.0,
    }


def measure_fleet() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", appendonly=False) as redis:
        data_dir, port = Path(tmp) / "data", free_port()
        fake_url = f"http://127.0.0.1:{port}"
        fake_command = [sys.executable, "-m", "tests.fakes.anthropic_cli", "--port", str(port),
                        "--first-byte-delay", "2", "--reply-tokens", "300", "--chunk-chars", "200",
                        "--rpm", str(RPM), "--itpm", str(ITPM), "--otpm", str(OTPM)]  # fmt: skip
        fake = subprocess.Popen(fake_command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = fleet_env(redis.url, data_dir, fake_url)
        command = [sys.executable, "-m", "arq", "worker_settings.WorkerSettings"]
        workers = [
            subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(WORKERS)
        ]
        try:
            time.sleep(3)
            os.environ.update({"REDIS_URL": redis.url})
            job_ids = asyncio.run(submit_all(redis.url, data_dir))
            records, most_active = asyncio.run(watch(redis.url, job_ids, limit_s=400))
            return summarize(records, most_active, fake_stats(fake_url))
        finally:
            for process in [*workers, fake]:
                process.terminate()
            for process in [*workers, fake]:
                process.wait(60)


def fleet_section(machine: str) -> str:
    r = measure_fleet()
    return f"""## A fleet under the provider's limits: 3 workers, 300 jobs, 30 users

Measured {machine}.
Three worker processes (10 jobs each), a fake Anthropic in its own process with 2 s latency enforcing
{RPM} requests, {ITPM:,} input and {OTPM:,} output tokens per minute, and the same limits configured in the
service; {JOBS} jobs from {USERS} users (half pro, half free) submitted at once. Caps: 2 running jobs per
free user, 5 per pro user; pro lead 60 s. Command: `python -m bench fleet`.

| measure | value | goal |
|---|---|---|
| share of the provider's request budget used (after the first minute's burst) | {r["budget_share"]:.1%} | >= 95% |
| provider 429s | {r["provider_429s"]} | 0 |
| queue wait, pro, p50 / p95 | {r["wait_pro_p50_s"]} s / {r["wait_pro_p95_s"]} s | |
| queue wait, free, p50 / p95 | {r["wait_free_p50_s"]} s / {r["wait_free_p95_s"]} s | |
| most jobs one user had running at once | {r["most_active_one_user"]} | <= 5 (pro), 2 (free) |
| jobs completed, provider calls | {r["completed"]}, {r["provider_calls"]} | 300, 300 |

The limiter aims at 97% of each limit (`LLM_LIMIT_HEADROOM`), so about 97% is the most it will use.
"""


if __name__ == "__main__":
    print(measure_fleet())
