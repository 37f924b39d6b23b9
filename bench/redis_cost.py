"""What a job costs Redis, measured the way ../shared/PEERS.md measured the peers.

A fresh redis-server (no persistence), the API and one worker as real processes, the offline
provider (it streams like the real one, so the job has progress and text events). After a warm-up,
``CONFIG RESETSTAT``, then N jobs end to end (an upload, then ``POST /api/reports`` with its own
idempotency key for each, the worker's whole pipeline, the PDF stored), then the stream compaction
the sweeper would do; then ``INFO commandstats`` / ``INFO cpu``. Redis counts each command a Lua
script runs as well as the EVALSHA itself: "commands" include both. Idle: the worker alone for a
minute, no jobs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.store.connection import open_redis
from service.store.jobs import JobStore

ROOT = Path(__file__).resolve().parent.parent
CSV = "region,revenue,units\n" + "".join(f"r{n},{n * 37 % 1000},{n % 17}\n" for n in range(40))


def service_env(redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(data_dir), "PORT": str(port),
            "WORKER_CONCURRENCY": "20", "USER_MAX_ACTIVE_PRO": "0", "SUBMISSIONS_PER_MINUTE_PRO": "0",
            "UPLOADS_PER_MINUTE_PRO": "0", "LOG_LEVEL": "warning", "METRICS_FLUSH_SECONDS": "5"}  # fmt: skip


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    quiet = subprocess.DEVNULL
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=quiet, stderr=quiet)


def create_key(env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "service", "keys", "create", "--user", "cost", "--plan", "pro"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the API did not come up")


async def run_jobs(url: str, key: str, count: int, tag: str, expected: int = 0) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        upload = await http.post(
            "/api/inputs?name=sales.csv", content=CSV, headers={**headers, "Content-Type": "text/csv"}
        )
        source = upload.json()["inputDataUrl"]
        job_ids = []
        for number in range(count):
            body = {"inputDataUrl": source, "idempotencyKey": f"{tag}-{number:06d}"}
            job_ids.append((await http.post("/api/reports", json=body, headers=headers)).json()["jobId"])
        # One cheap request a second (the usage counts completed reports), not one per job: the
        # measurement would otherwise count the benchmark's own polling.
        while (await http.get("/api/usage", headers=headers)).json()["reports"] < expected + count:
            await asyncio.sleep(1.0)
    return job_ids


async def stats(redis: Redis) -> dict[str, Any]:
    commands = await redis.info("commandstats")
    cpu = await redis.info("cpu")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in commands.items()}
    return {"calls": calls, "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])}


async def measure_jobs(redis_url: str, url: str, key: str, count: int) -> dict[str, Any]:
    client = open_redis(redis_url, fail_fast=False)
    await run_jobs(url, key, 5, "warm-up")
    await asyncio.sleep(6)  # the warm-up's metrics flushed
    await client.config_resetstat()
    before = await stats(client)
    started = time.monotonic()
    await run_jobs(url, key, count, "measured", expected=5)
    elapsed = time.monotonic() - started
    await asyncio.sleep(6)  # the last metrics flush, as in a real fleet
    jobs = JobStore(client)
    while await jobs.compact_finished(older_than_seconds=0) > 0:
        pass
    after = await stats(client)
    await client.aclose()
    return {
        "count": count,
        "elapsed_s": elapsed,
        "calls": after["calls"],
        "cpu_s": after["cpu_s"] - before["cpu_s"],
    }


async def measure_idle(redis_url: str, seconds: float) -> dict[str, int]:
    client = open_redis(redis_url, fail_fast=False)
    await client.config_resetstat()
    await asyncio.sleep(seconds)
    calls: dict[str, int] = (await stats(client))["calls"]
    await client.aclose()
    return calls


def measure_redis_cost(count: int = 1000, idle_seconds: float = 60.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", appendonly=False) as redis:
        port = free_port()
        env = service_env(redis.url, Path(tmp) / "data", port)
        url = f"http://127.0.0.1:{port}"
        api_command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
                       "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        api = spawn(api_command, env)
        worker = spawn([sys.executable, "-m", "arq", "worker_settings.WorkerSettings"], env)
        try:
            asyncio.run(wait_ready(url))
            key = create_key(env)
            jobs = asyncio.run(measure_jobs(redis.url, url, key, count))
            api.terminate()
            api.wait(20)
            idle = asyncio.run(measure_idle(redis.url, idle_seconds))
        finally:
            for process in (api, worker):
                process.terminate()
            for process in (api, worker):
                process.wait(30)
    return {**jobs, "idle_calls": idle, "idle_seconds": idle_seconds}


if __name__ == "__main__":
    result = measure_redis_cost(count=int(sys.argv[1]) if len(sys.argv) > 1 else 200, idle_seconds=20)
    total = sum(result["calls"].values())
    print(
        f"{total / result['count']:.1f} commands per job, {result['cpu_s'] / result['count'] * 1e6:.0f} µs CPU"
    )
    for name, calls in sorted(result["calls"].items(), key=lambda item: -item[1])[:25]:
        print(f"  {name:<24} {calls / result['count']:7.2f}")
    idle = sum(result["idle_calls"].values()) * 60 / result["idle_seconds"]
    print(f"idle worker: {idle:.0f} commands per minute: {result['idle_calls']}")
