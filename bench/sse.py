"""SSE fan-out benchmark: thousands of subscribers on one API process, jobs advancing in another.

Three processes besides Redis, as in production: the API (one uvicorn, as the Procfile starts it),
a load client holding every stream open (``bench/sse_client.py``), and a publisher that advances the
jobs through ``JobStore.advance`` the way workers do, stamping each event with its publish time.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from bench.enqueue import mint_key, start_server
from service.dev.embedded_redis import EmbeddedRedis
from service.store.connection import open_redis
from service.store.job_types import StartPolicy
from service.store.jobs import JobStore, member_of

ROOT = Path(__file__).resolve().parent.parent
SETTLE_SECONDS = 3.0


def create_jobs(url: str, key: str, count: int) -> list[dict[str, str]]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"inputDataUrl": "https://example.com/data/sales.csv"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        return [client.post("/api/reports", json=body).json() for _ in range(count)]


async def publish(redis_url: str, job_ids: list[str], seconds: float, per_second: float) -> int:
    """Advances every job ``per_second`` times a second, spread evenly; the stage is the send time."""
    client = open_redis(redis_url, fail_fast=False)
    await client.client_setname("bench-publisher")
    jobs = JobStore(client)
    interval = 1 / (per_second * len(job_ids))
    sent, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        job_id = job_ids[sent % len(job_ids)]
        await jobs.advance(job_id, stage=f"t{time.time_ns()}", progress=min(99, 10 + sent // len(job_ids)))
        sent += 1
        delay = started + sent * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await client.aclose()
    return sent


START = StartPolicy(max_crashes=3, cap_free=0, cap_pro=0, lease_ms=600_000)


async def start_jobs(redis_url: str, job_ids: list[str]) -> None:
    client = open_redis(redis_url, fail_fast=False)
    jobs = JobStore(client)
    for job_id in job_ids:
        record = await jobs.get(job_id)
        assert record is not None
        await jobs.start(member_of(record), START)  # its first stage, fetching, with it
    await client.aclose()


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kilobytes) * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system time of the process (Linux /proc; the benchmark machine is Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_connections(monitor: redis.Redis) -> int:
    """Connections held by the API: everything but this benchmark's own named ones."""
    clients: list[dict[str, Any]] = monitor.client_list()  # type: ignore[assignment]
    return sum(1 for c in clients if not str(c.get("name", "")).startswith("bench-"))


def read_json_line(stream: IO[str] | None) -> dict[str, Any]:
    assert stream is not None
    line = stream.readline()
    if not line:
        raise RuntimeError("the SSE load client died; run bench/sse_client.py by hand to see why")
    figures: dict[str, Any] = json.loads(line)
    return figures


class Crowd:
    """The load client's process: every stream open once ``ready`` is read."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        started = time.perf_counter()
        self.ready = read_json_line(process.stdout)
        self.ready["ramp_seconds"] = time.perf_counter() - started

    def stop(self) -> dict[str, Any]:
        """Closes every stream; the delivery figures the client collected."""
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        return read_json_line(self.process.stdout)


@contextmanager
def crowd(api_url: str, paths: list[str]) -> Iterator[Crowd]:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as listing:
        json.dump(paths, listing)
        listing.flush()
        command = [sys.executable, "-m", "bench.sse_client", api_url, listing.name]
        pipe = subprocess.PIPE
        process = subprocess.Popen(command, cwd=ROOT, stdin=pipe, stdout=pipe, text=True)
        try:
            yield Crowd(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()  # EOF: the client closes its streams and exits
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def measure_delivery(
    api_url: str, redis_url: str, jobs: list[dict[str, str]], paths: list[str], seconds: float,
    per_second: float, api_pid: int,
) -> dict[str, Any]:  # fmt: skip
    """Opens the streams, measures the API at rest with them, then publishes and collects latency."""
    monitor = redis.Redis.from_url(redis_url, client_name="bench-monitor")
    try:
        with crowd(api_url, paths) as first:
            figures = {**first.ready, "rss_with_subscribers": rss_bytes(api_pid)}
            figures["redis_connections"] = api_connections(monitor)
            # The last full garbage collections triggered by the ramp (the heap grew) land here,
            # not in the delivery window: that window measures steady-state delivery.
            time.sleep(SETTLE_SECONDS)
            cpu_before = cpu_seconds(api_pid)
            sent = asyncio.run(publish(redis_url, [job["jobId"] for job in jobs], seconds, per_second))
            figures["api_cpu_percent"] = 100 * (cpu_seconds(api_pid) - cpu_before) / seconds
            time.sleep(0.5)  # the last events in flight
            figures.update(first.stop(), published=sent)
    finally:
        monitor.close()
    return figures


def measure_sse(
    subscribers: int = 5_000, jobs: int = 200, seconds: float = 20.0, per_second: float = 1.0
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as data,
        EmbeddedRedis(Path(data) / "redis", appendonly=False) as server,
    ):
        env = {**os.environ, "REDIS_URL": server.url, "DATA_DIR": data, "LOG_FORMAT": "json"}
        env["SUBMISSIONS_PER_MINUTE_PRO"] = "0"  # 200 jobs at once from one user: no rate limit here
        env["EVENTS_MAX_STREAMS_PER_USER"] = "0"  # and thousands of its streams: no cap either
        key = mint_key(server.url)
        api, url = start_server("service.app:create_app", env)
        try:
            submitted = create_jobs(url, key, jobs)
            asyncio.run(start_jobs(server.url, [job["jobId"] for job in submitted]))
            paths = [submitted[i % jobs]["eventsUrl"] for i in range(subscribers)]
            rss_idle = rss_bytes(api.pid)
            figures = measure_delivery(url, server.url, submitted, paths, seconds, per_second, api.pid)
            time.sleep(1.0)  # the API notices the disconnections
            rss_after = rss_bytes(api.pid)
            with crowd(url, paths) as second:  # the same crowd again: a leak would grow the RSS
                second.stop()
            time.sleep(1.0)
            rss_after_second = rss_bytes(api.pid)
        finally:
            api.terminate()
            api.wait(timeout=30)
    return {
        **figures,
        "jobs": jobs,
        "seconds": seconds,
        "per_second": per_second,
        "rss_idle": rss_idle,
        "rss_after": rss_after,
        "rss_after_second": rss_after_second,
        "rss_per_subscriber": (figures["rss_with_subscribers"] - rss_idle) / figures["subscribers"],
    }


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def sse_section(machine: str) -> str:
    r = measure_sse()
    expected = r["published"] * r["subscribers"] // r["jobs"]
    meets = r["redis_connections"] <= 4 and r["p99_ms"] < 100 and r["events"] == expected
    return f"""## SSE fan-out: {r["subscribers"]:,} subscribers on one API process

Measured {machine}.
One uvicorn process (httptools, uvloop) as the Procfile starts it, an embedded Redis 6.2.
`bench/sse_client.py`, in its own process, holds {r["subscribers"]:,} event streams open on raw asyncio
sockets: {r["subscribers"] // r["jobs"]} on each of {r["jobs"]} running jobs, with the `eventsUrl` token as browsers use
it (opened 250 at a time, all in {r["ramp_seconds"]:.1f} s). Another process advances each job
({r["per_second"]:g} event per job per second) for {r["seconds"]:g} s through `JobStore.advance`, the workers' script;
each event carries its publish time, so latency runs from just before that call to the client
reading the event. Command: `python -m bench sse`.

| Redis connections held by the API | events delivered / expected | latency p50 ms | p99 ms | max ms | API CPU while publishing |
|---|---|---|---|---|---|
| {r["redis_connections"]} | {r["events"]:,} / {expected:,} | {r["p50_ms"]:.1f} | {r["p99_ms"]:.1f} | {r["max_ms"]:.1f} | {r["api_cpu_percent"]:.0f} % |

| API RSS idle | with the subscribers | per subscriber | after they left | after the same crowd came and went again |
|---|---|---|---|---|
| {_mb(r["rss_idle"])} | {_mb(r["rss_with_subscribers"])} | {r["rss_per_subscriber"] / 1e3:.0f} kB | {_mb(r["rss_after"])} | {_mb(r["rss_after_second"])} |

First event (the snapshot) after connecting: p50 {r["snapshot_p50_ms"]:.0f} ms, p99 {r["snapshot_p99_ms"]:.0f} ms,
while 250 connections at a time were being opened. Streams that failed: {r["failed_streams"]}.
Each open stream keeps about 260 objects the garbage collector tracks (sse-starlette's task group of
four tasks, anyio, uvicorn; the fan-out's own share is under ten): with CPython's default settings a
full collection at 5,000 streams paused the process 0.5 to 1 s (delivery p99 of 715 ms measured). The
API now freezes its start-up objects out of collection and collects young objects less eagerly,
as the worker does; {SETTLE_SECONDS:g} s of settling after the ramp still separate connecting from delivery.
Targets (at most 4 Redis connections, p99 under 100 ms, every event delivered): {"meets" if meets else "misses"} them.
"""


if __name__ == "__main__":
    print(json.dumps(measure_sse(), indent=2))
