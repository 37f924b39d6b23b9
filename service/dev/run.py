"""`make run`: an embedded Redis, the API and one worker on this machine, stopped together on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from service.core.settings import Settings
from service.dev.embedded_redis import EmbeddedRedis
from service.store.connection import open_redis
from service.store.keys import KeyStore

DEMO_USERS = (("demo-pro", "pro"), ("demo-free", "free"))


async def create_demo_keys(redis_url: str) -> dict[str, str]:
    """Fresh keys for the two demo users on every start; their older keys are revoked."""
    redis = open_redis(redis_url, fail_fast=True)
    store = KeyStore(redis)
    try:
        for info in await store.list():
            if info.user_id in dict(DEMO_USERS) and info.revoked_at is None:
                await store.revoke(info.key_id)
        return {user: (await store.create(user, plan))[0] for user, plan in DEMO_USERS}
    finally:
        await redis.aclose()


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(command, env=env, start_new_session=True)


def wait_for_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own loopback URL)
                return bool(response.status == 200)
        except OSError:
            time.sleep(0.2)
    return False


def banner(base_url: str, keys: dict[str, str], settings: Settings, redis_note: str) -> str:
    pro, free = keys["demo-pro"], keys["demo-free"]
    provider = "offline provider (no ANTHROPIC_API_KEY)" if settings.offline else "Anthropic"
    return f"""
  Report service is running at {base_url}   (Ctrl-C stops everything)
  Redis: {redis_note}    Reports written by: {provider}

  Demo API keys
    pro  (demo-pro):  {pro}
    free (demo-free): {free}

  Open {base_url}/ in a browser and paste a key, or from another terminal:
    REPORT_API_KEY={pro} .venv/bin/python -m service submit examples/sales.csv --follow --out report.pdf

  Or with curl (README.md walks through it):
    export KEY={pro}
    curl -s -X POST {base_url}/api/inputs -H "Authorization: Bearer $KEY" \\
         -H 'Content-Type: text/csv' --data-binary @examples/sales.csv
    curl -s -X POST {base_url}/api/reports -H "Authorization: Bearer $KEY" \\
         -H 'Content-Type: application/json' -d '{{"inputDataUrl": "<inputDataUrl from above>"}}'
    curl -s {base_url}/api/reports/<jobId> -H "Authorization: Bearer $KEY"
    curl -s -o report.pdf {base_url}/api/reports/<jobId>/pdf -H "Authorization: Bearer $KEY"
"""


def stop(children: list[subprocess.Popen[bytes]], grace: float) -> None:
    """API first (no new jobs), then the worker (drains), each with SIGTERM and a deadline."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def supervise(children: list[subprocess.Popen[bytes]]) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(
                    f"\n  a process exited with code {child.returncode}: stopping the rest", file=sys.stderr
                )
                return 1
        time.sleep(0.2)
    print("\n  stopping: API, then worker (draining), then Redis ...", flush=True)
    return 0


def run_dev() -> int:
    settings = Settings()
    env = dict(os.environ)
    embedded: EmbeddedRedis | None = None
    if "redis_url" in settings.model_fields_set:
        redis_url, redis_note = settings.redis_url, "REDIS_URL from the environment"
    else:
        embedded = EmbeddedRedis(Path(settings.data_dir) / "redis", own_session=True)
        redis_url = embedded.start()
        redis_note = f"embedded {redis_url} (data in {embedded.data_dir}, AOF on)"
    env["REDIS_URL"] = redis_url
    children: list[subprocess.Popen[bytes]] = []
    try:
        keys = asyncio.run(create_demo_keys(redis_url))
        base_url = f"http://127.0.0.1:{settings.port}"
        api = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
               "--host", "127.0.0.1", "--port", str(settings.port)]  # fmt: skip
        children.append(spawn(api, env))
        children.append(spawn([sys.executable, "-m", "arq", "worker_settings.WorkerSettings"], env))
        if not wait_for_http(f"{base_url}/healthz", timeout=30):
            print(f"the API did not answer on {base_url} (is port {settings.port} taken? set PORT)")
            return 1
        print(banner(base_url, keys, settings, redis_note), flush=True)
        return supervise(children)
    finally:
        stop(children, grace=settings.worker_grace_seconds + 5)
        if embedded is not None:
            embedded.stop()
        print("  stopped.", flush=True)
