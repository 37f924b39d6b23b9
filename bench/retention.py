"""Redis memory per retained job, and proof that 50,000 finished jobs stay bounded by the cap.

Each simulated job goes through the same store operations a real one does (submit, start, the
stage events with twenty streaming-progress updates, complete), against an embedded Redis.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from service.dev.embedded_redis import EmbeddedRedis
from service.store.connection import open_redis
from service.store.job_types import NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id

OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=300_000)
RESULT = {"model": "claude-opus-4-7", "inputTokens": 2100, "outputTokens": 3900, "tokensUsed": 6000}
URL = "https://files.example.com/exports/2026/q3/sales-by-region.csv"


async def one_job(redis: Redis, jobs: JobStore, number: int, retention: Retention) -> None:
    job_id = derive_job_id(f"user-{number % 30}", f"key-{number}")
    new = NewJob(job_id, f"user-{number % 30}", "pro", URL, "claude-opus-4-7", "f" * 64)
    await jobs.submit(new, OPEN, keep_ms=86_400_000, score_ms=number)
    await jobs.start(job_id, START, stage="queued", progress=0)
    for stage, progress in (
        ("fetching", 10),
        *(("summarizing", 30 + 2 * i) for i in range(20)),
        ("rendering", 70),
    ):
        await jobs.advance(job_id, stage=stage, progress=progress)
    await jobs.advance(job_id, stage="storing", progress=90)
    pdf_key = f"reports/rep_{number:024x}.pdf"
    await jobs.complete(job_id, RESULT, pdf_key=pdf_key, retention=retention, period="2026-11")
    # What arq's worker does when the job function returns: its own keys go.
    await redis.delete(f"arq:job:{job_id}", f"arq:retry:{job_id}")
    await redis.zrem("arq:queue", job_id)


async def fill(total: int, cap: int, step: int, concurrency: int = 50) -> list[dict[str, int]]:
    with tempfile.TemporaryDirectory() as data, EmbeddedRedis(Path(data), appendonly=False) as server:
        redis = open_redis(server.url, fail_fast=False)
        jobs = JobStore(redis)
        retention = Retention(seconds=86_400, count=cap)
        await redis.ping()
        baseline = int((await redis.info("memory"))["used_memory"])
        points = []
        for start in range(0, total, step):
            for batch in range(start, start + step, concurrency):
                await asyncio.gather(
                    *(one_job(redis, jobs, n, retention) for n in range(batch, batch + concurrency))
                )
            await jobs.compact_finished(older_than_seconds=0, limit=100_000)  # as the sweeper does
            memory = int((await redis.info("memory"))["used_memory"])
            points.append(
                {"finished": start + step, "keys": await redis.dbsize(), "bytes": memory - baseline}
            )
        await redis.aclose()
        return points


def measure_retention(total: int = 50_000, cap: int = 10_000, step: int = 10_000) -> dict[str, Any]:
    points = asyncio.run(fill(total, cap, step))
    at_cap = next(point for point in points if point["finished"] >= cap)
    return {"total": total, "cap": cap, "points": points, "bytes_per_job": at_cap["bytes"] / cap}


if __name__ == "__main__":
    print(measure_retention())
