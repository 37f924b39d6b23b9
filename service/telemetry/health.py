"""Is this container's process healthy? What the image's HEALTHCHECK asks (``python -m service
health``). A web container answers ``GET /healthz``. A worker container has no port: it is healthy
when a worker process running here reported its gauges to Redis lately, as each worker does every
``METRICS_FLUSH_SECONDS`` (one whose event loop is stuck, or that cannot reach Redis, stops). The
worker processes are found in ``/proc``, so their gauges are read by name (``host:pid``): no SCAN of
the keyspace every few seconds from every container."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from service.core.errors import Unavailable
from service.core.settings import Settings
from service.store.connection import open_redis
from service.store.metrics import MetricsStore
from service.telemetry.metrics import gauge_refresh_seconds

Role = Literal["web", "worker"]
WORKER_GAUGE = "worker_jobs_in_flight"  # the gauge only worker processes report
REDIS_DEADLINE_SECONDS = 2.0  # inside the HEALTHCHECK's own 3 s timeout


def role_of(argv: Sequence[str]) -> Role:
    """The role of a container from its main command: arq's worker (``arq worker_settings...``,
    ``python -m arq ...``, or a shell running it), else the web process."""
    words = [os.path.basename(word) for word in argv]
    return "worker" if any(word == "arq" or "WorkerSettings" in word for word in words) else "web"


def container_command(cmdline: Path = Path("/proc/1/cmdline")) -> list[str]:
    """The container's main command (process 1); empty where it cannot be read."""
    try:
        raw = cmdline.read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def max_report_age(settings: Settings) -> float:
    """Two missed reports are a hiccup (a slow Redis, a long collection); more is a worker that stopped.
    An idle worker reports its gauges every ``gauge_refresh_seconds`` only (20 s by default)."""
    return 2 * gauge_refresh_seconds(settings.metrics_flush_seconds) + 1


def worker_pids(proc: Path = Path("/proc")) -> list[int]:
    """Processes here whose command is a worker's (in a container, its own processes only)."""
    try:
        entries = [entry for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return []
    return sorted(int(entry.name) for entry in entries if _is_worker(entry / "cmdline"))


def _is_worker(cmdline: Path) -> bool:
    command = container_command(cmdline)
    return bool(command) and role_of(command) == "worker"


async def check_worker(settings: Settings, host: str, pids: list[int]) -> tuple[bool, str]:
    if not pids:
        return False, "no worker process runs here"
    redis = open_redis(settings.redis_url, fail_fast=True)
    try:
        store = MetricsStore(redis, deadline=REDIS_DEADLINE_SECONDS)
        ages = await store.report_ages([f"{host}:{pid}" for pid in pids], WORKER_GAUGE)
    except Unavailable:
        return False, "Redis is unreachable"
    finally:
        await redis.aclose()
    limit = max_report_age(settings)
    if not ages:
        return False, f"no worker process here ({', '.join(map(str, pids))}) has reported to Redis"
    instance, age = min(ages.items(), key=lambda item: item[1])
    if age <= limit:
        return True, f"worker {instance} reported {age:.1f} s ago"
    return False, f"worker {instance} last reported {age:.1f} s ago (more than {limit:g} s)"


def check_web(port: int, timeout: float = 2.0) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"{url} answered {response.status}"
    except (OSError, ValueError) as exc:  # HTTPError and URLError are OSErrors
        return False, f"{url}: {exc}"
