"""``python -m service health``, the image's HEALTHCHECK, as a real subprocess: a worker container is
healthy while a worker process running there reports to Redis (a real worker started with the
Procfile's command), unhealthy within a few seconds of it hanging (SIGSTOP) and healthy again once it
reports; gauges of a dead worker, of another host or of a process that is no worker do not count; a
web container is healthy when its API answers /healthz."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from service.store import names
from service.store.metrics import GAUGE_TTL_SECONDS
from service.telemetry.health import container_command, worker_pids
from service.telemetry.metrics import gauge_refresh_seconds
from tests.fakes.processes import ROOT, ServiceProcess, service_env, start_api, start_worker

FLUSH_SECONDS = 1  # the worker flushes every second, its gauges every 4: the check's limit is 2 x 4 + 1 = 9 s
LIMIT_SECONDS = 2 * gauge_refresh_seconds(FLUSH_SECONDS) + 1


def health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service", "health", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


async def health_until(env: dict[str, str], code: int, timeout: float, *args: str) -> tuple[float, str]:
    """Runs the check until it exits ``code``; how long that took, and its line."""
    started = time.monotonic()
    while True:
        checked = await asyncio.to_thread(health, env, *args)
        if checked.returncode == code:
            return time.monotonic() - started, checked.stdout
        if time.monotonic() - started > timeout:
            raise AssertionError(f"health {args} never exited {code}: {checked.stdout}{checked.stderr}")
        await asyncio.sleep(0.2)


@pytest.mark.slow  # a real worker process, timed against the check's limit
async def test_a_worker_container_is_healthy_while_its_worker_reports_and_not_once_it_hangs(
    redis_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    env = service_env(redis_url, tmp_path / "data", METRICS_FLUSH_SECONDS=str(FLUSH_SECONDS))
    before = health(env, "--worker")
    assert before.returncode == 1 and before.stdout.startswith("unhealthy (worker): ")
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    _, line = await health_until(env, 0, 20, "--worker")
    instance = f"{socket.gethostname()}:{worker.process.pid}"
    assert line.startswith(f"healthy (worker): worker {instance} reported")
    worker.signal(signal.SIGSTOP)  # alive but stuck: as a worker whose loop hangs
    try:
        took, line = await health_until(env, 1, LIMIT_SECONDS + 5, "--worker")
        assert took < LIMIT_SECONDS + 3 and f"worker {instance} last reported" in line
    finally:
        worker.signal(signal.SIGCONT)
    await health_until(env, 0, 10, "--worker")  # reporting again: healthy again
    worker.process.kill()
    worker.process.wait()
    gone = health(env, "--worker")  # its gauges outlive it in Redis for a while: they do not count
    assert gone.returncode == 1 and f"worker {instance}" not in gone.stdout


@asynccontextmanager
async def lookalike_worker() -> AsyncIterator[int]:
    """A process here whose command line is a worker's (the check finds workers in /proc by it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)", "arq", "worker_settings.WorkerSettings"
    )
    try:
        yield process.pid
    finally:
        process.kill()
        await process.wait()


async def gauges(redis_url: str, instance: str, fields: dict[str, float]) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(names.metrics_gauges(instance))
        await client.hset(names.metrics_gauges(instance), mapping=fields)
        await client.expire(names.metrics_gauges(instance), GAUGE_TTL_SECONDS)  # as a flush sets it
    finally:
        await client.aclose()


async def test_only_a_worker_gauge_of_a_worker_process_here_makes_it_healthy(
    redis_url: str, tmp_path: Path
) -> None:
    env = service_env(redis_url, tmp_path / "data")
    async with lookalike_worker() as pid:
        here = f"{socket.gethostname()}:{pid}"
        worker_gauge = 'worker_jobs_in_flight\x1f{"worker":"' + here + '"}'
        await gauges(redis_url, here, {"sse_subscribers\x1f{}": 1})  # an API's gauges: no worker's
        assert health(env, "--worker").returncode == 1
        await gauges(redis_url, f"elsewhere:{pid}", {worker_gauge: 0})  # another host's
        not_here = health(env, "--worker")
        assert not_here.returncode == 1 and "has reported" in not_here.stdout
        await gauges(redis_url, here, {worker_gauge: 0})
        healthy = health(env, "--worker")
        assert healthy.returncode == 0 and f"worker {here} reported" in healthy.stdout


async def test_a_worker_check_without_redis_is_unhealthy_in_one_line(tmp_path: Path) -> None:
    env = service_env("redis://127.0.0.1:1/0", tmp_path / "data")
    async with lookalike_worker():
        checked = health(env, "--worker")
    assert checked.returncode == 1 and checked.stdout == "unhealthy (worker): Redis is unreachable\n"


async def test_a_web_container_is_healthy_when_its_api_answers(
    redis_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    env = service_env(redis_url, tmp_path / "data")
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    port = url.rsplit(":", 1)[1]
    answered = await asyncio.to_thread(health, {**env, "PORT": port}, "--web")
    assert answered.returncode == 0 and "/healthz answered 200" in answered.stdout
    api.process.kill()
    api.process.wait()
    refused = await asyncio.to_thread(health, {**env, "PORT": port}, "--web")
    assert refused.returncode == 1 and refused.stdout.startswith("unhealthy (web):")


def test_worker_processes_are_found_by_their_command_line(tmp_path: Path) -> None:
    for pid, command in ((7, b"/venv/bin/python\x00/venv/bin/arq\x00worker_settings.WorkerSettings\x00"),
                         (8, b"uvicorn\x00--factory\x00service.app:create_app\x00"), (9, b"")):  # fmt: skip
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(command)
    (tmp_path / "self").mkdir()
    assert worker_pids(tmp_path) == [7]


def test_the_container_command_is_read_from_process_ones_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/venv/bin/python\x00/venv/bin/arq\x00worker_settings.WorkerSettings\x00")
    assert container_command(cmdline) == [
        "/venv/bin/python",
        "/venv/bin/arq",
        "worker_settings.WorkerSettings",
    ]
    assert container_command(tmp_path / "missing") == []
