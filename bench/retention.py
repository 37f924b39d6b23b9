"""Redis memory per retained job, and proof that 50,000 finished jobs stay bounded by the cap.

Each simulated job goes through the same store steps a real one does: submit, start (fetching), the
model call's reservation (summarizing), twenty streaming records with the answer's text, the saved
answer (rendering), storing, complete; against an embedded Redis. Memory is read once the finished
jobs' event streams have gone, as they do a minute after each job ends (``REPLAY_MS``): here their
expiry is brought forward rather than waited for.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from service.dev.embedded_redis import EmbeddedRedis
from service.store import names
from service.store.calls import CallLedger, PaidCall
from service.store.connection import open_redis
from service.store.job_types import Checkpoint, NewJob, Retention, StartPolicy, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id

USERS = 30  # one_job spreads the jobs over this many users
OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="2026-11")
START = StartPolicy(max_crashes=5, cap_free=0, cap_pro=0, lease_ms=300_000)
RESULT = {"model": "claude-opus-4-7", "inputTokens": 2100, "outputTokens": 3900, "tokensUsed": 6000}
URL = "https://files.example.com/exports/2026/q3/sales-by-region.csv"
ANSWER = "# Executive report\n\n" + "Revenue grew in every region; the north led the quarter. " * 70


async def one_job(jobs: JobStore, ledger: CallLedger, number: int, retention: Retention) -> None:
    user = f"user-{number % USERS}"
    job_id = derive_job_id(user, f"key-{number}")
    new = NewJob(job_id, user, "pro", URL, "claude-opus-4-7", "f" * 64)
    await jobs.submit(new, OPEN, keep_ms=86_400_000, score_ms=number)
    started = await jobs.start(names.queue_member(job_id, user), START)
    usage = names.usage(user, "2026-11")
    call = PaidCall(job_id, "c0ffee12ab34", usage, input_price_nusd=15_000, output_price_nusd=75_000)
    await ledger.reserve(
        call, input_tokens=2100, worst_case=6196, budget=0, model="claude-opus-4-7", hold_key=usage
    )
    step = len(ANSWER) // 21
    for i in range(20):
        text = ANSWER[: step * (i + 1)]
        await ledger.record(
            call, 2100, 190 * i, progress=30 + 2 * i, text_offset=step * i, text=text[step * i :]
        )
    checkpoint = Checkpoint(
        ANSWER, "claude-opus-4-7", 2100, 3900, False, "sales.csv (8.5 kB)", "sales.csv", "req_1"
    )
    rest = ANSWER[step * 20 :]
    await ledger.record(
        call, 2100, 3900, request_id="req_011CUabc", outcome="answered", progress=70, checkpoint=checkpoint,
        text_offset=step * 20, text=rest, stage="rendering",
    )  # fmt: skip
    await jobs.advance(job_id, stage="storing", progress=90)
    pdf_key = f"reports/rep_{number:024x}.pdf"
    await jobs.complete(started.record, RESULT, pdf_key=pdf_key, retention=retention, period="2026-11")


async def expire_replayed_streams(redis: Redis) -> None:
    """What a minute does to finished jobs' streams: Redis expires them (here, at once)."""
    async for key in redis.scan_iter(match=names.JOB_PREFIX + "*" + names.EVENTS_SUFFIX, count=1000):
        if 0 < await redis.pttl(key) <= names.REPLAY_MS:
            await redis.pexpire(key, 1)
    await asyncio.sleep(0.2)
    async for key in redis.scan_iter(match=names.JOB_PREFIX + "*" + names.EVENTS_SUFFIX, count=1000):
        await redis.exists(key)  # an access expires a key Redis has not swept yet


async def fill(total: int, cap: int, step: int, concurrency: int = 50) -> list[dict[str, int]]:
    with tempfile.TemporaryDirectory() as data, EmbeddedRedis(Path(data), appendonly=False) as server:
        redis = open_redis(server.url, fail_fast=False)
        jobs, ledger = JobStore(redis), CallLedger(redis)
        retention = Retention(seconds=86_400, count=cap)
        await redis.ping()
        baseline = int((await redis.info("memory"))["used_memory"])
        points = []
        for start in range(0, total, step):
            for batch in range(start, start + step, concurrency):
                await asyncio.gather(
                    *(one_job(jobs, ledger, n, retention) for n in range(batch, batch + concurrency))
                )
            await expire_replayed_streams(redis)
            memory = int((await redis.info("memory"))["used_memory"])
            points.append(
                {"finished": start + step, "keys": await redis.dbsize(), "bytes": memory - baseline}
            )
        await redis.aclose()
        return points


def measure_retention(total: int = 50_000, cap: int = 1_000, step: int = 10_000) -> dict[str, Any]:
    """``cap`` is per user: 30 users, so the fleet keeps up to 30 x cap; the first point is under it."""
    points = asyncio.run(fill(total, cap, step))
    first, last = points[0], points[-1]
    at_cap = next((p for p in points if p["finished"] >= cap * USERS), last)
    past_cap = last["finished"] - at_cap["finished"]
    # An evicted job leaves a tombstone (what answers a replayed POST as a replay) for its retention time.
    tombstone = (last["bytes"] - at_cap["bytes"]) / past_cap if past_cap else 0.0
    return {"total": total, "cap": cap, "users": USERS, "points": points,
            "bytes_per_job": first["bytes"] / first["finished"], "tombstone_bytes": tombstone}  # fmt: skip


if __name__ == "__main__":
    print(measure_retention(total=2_000, cap=100, step=1_000))
