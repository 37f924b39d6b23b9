"""``python -m service health``, the image's HEALTHCHECK, as a real subprocess: a worker container is
healthy while a worker process on its host reports to Redis (a real worker started with the
Procfile's command) and unhealthy soon after it dies; a worker on another host does not count; a web
container is healthy when its API answers /healthz."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from service.store import names
from service.telemetry.health import container_command
from tests.fakes.processes import ROOT, ServiceProcess, service_env, start_api, start_worker

FLUSH_SECONDS = 1  # the worker reports every second: the check's limit is 2 x 1 + 1 = 3 s


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


async def test_a_worker_container_is_healthy_while_its_worker_reports_and_not_once_it_died(
    redis_url: str, tmp_path: Path, processes: list[ServiceProcess]
) -> None:
    env = service_env(redis_url, tmp_path / "data", METRICS_FLUSH_SECONDS=str(FLUSH_SECONDS))
    before = health(env, "--worker")
    assert before.returncode == 1 and "no worker on" in before.stdout
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    _, line = await health_until(env, 0, 20, "--worker")
    assert line.startswith(f"healthy (worker): a worker on {socket.gethostname()} reported")
    worker.process.kill()  # no goodbye: as a worker that is stuck or gone
    took, line = await health_until(env, 1, 10, "--worker")
    assert took < 2 * FLUSH_SECONDS + 1 + 3 and "last reported" in line


async def test_a_worker_on_another_host_does_not_make_this_one_healthy(
    redis_url: str, tmp_path: Path
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        gauge = 'worker_jobs_in_flight\x1f{"worker":"elsewhere:1"}'
        await client.hset(names.metrics_gauges("elsewhere:1"), mapping={gauge: 0})
        await client.expire(names.metrics_gauges("elsewhere:1"), 30)
        # This host's API process reports too, but it is no worker.
        await client.hset(names.metrics_gauges(f"{socket.gethostname()}:2"), mapping={"sse_subscribers": 0})
        await client.expire(names.metrics_gauges(f"{socket.gethostname()}:2"), 30)
    finally:
        await client.aclose()
    checked = health(service_env(redis_url, tmp_path / "data"), "--worker")
    assert checked.returncode == 1 and "no worker on" in checked.stdout


async def test_a_worker_check_without_redis_is_unhealthy_in_one_line(tmp_path: Path) -> None:
    env = service_env("redis://127.0.0.1:1/0", tmp_path / "data")
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


def test_the_container_command_is_read_from_process_ones_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/venv/bin/python\x00/venv/bin/arq\x00worker_settings.WorkerSettings\x00")
    assert container_command(cmdline) == [
        "/venv/bin/python",
        "/venv/bin/arq",
        "worker_settings.WorkerSettings",
    ]
    assert container_command(tmp_path / "missing") == []
