"""The API and the worker as real subprocesses, started with the Procfile's commands."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.dev.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def service_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Only what the processes need: nothing leaks in from the developer's shell."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 (a fallback for a missing HOME only)
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "ALLOW_PRIVATE_INPUT_URLS": "true",
        "LOG_FORMAT": "json",
        "RETRY_BASE_SECONDS": "0.2",
        "LLM_REQUESTS_PER_MINUTE": "100000",
        "LLM_INPUT_TOKENS_PER_MINUTE": "100000000",
        "LLM_OUTPUT_TOKENS_PER_MINUTE": "100000000",
        "PYTHONUNBUFFERED": "1",
    }
    return {**env, **extra}


class ServiceProcess:
    """One subprocess with its output in a log file (shown when a test fails)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def signal(self, signum: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout}s; log:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker") -> ServiceProcess:
    return ServiceProcess(name, [sys.executable, "-m", "arq", "worker_settings.WorkerSettings"], env, log_dir)


async def start_api(env: dict[str, str], log_dir: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    api = ServiceProcess("api", command, {**env, "PORT": str(port)}, log_dir)
    url = f"http://127.0.0.1:{port}"
    await wait_until_healthy(api, url)
    return api, url


async def wait_until_healthy(process: ServiceProcess, url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.process.poll() is not None:
                raise RuntimeError(f"{process.name} exited early:\n{process.log()}")
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{process.name} not healthy after {timeout}s:\n{process.log()}")


async def wait_for_worker_ready(process: ServiceProcess, timeout: float = 20) -> None:
    """The worker logs ``worker_started`` once its startup hook has run."""
    deadline = time.monotonic() + timeout
    while "worker_started" not in process.log():
        if process.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not start:\n{process.log()}")
        await asyncio.sleep(0.05)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
