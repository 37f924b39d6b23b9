"""What the end-to-end tests share: the API as one user sees it, keys as the CLI mints them, stored PDFs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import httpx

from tests.conftest import create_key, make_settings, submit
from tests.fakes.processes import ServiceProcess, start_api, start_worker, wait_for_worker_ready

JOB_TIMEOUT = 3  # a dead worker's job runs again about JOB_TIMEOUT + 5 s later


class Client:
    """The API as one user sees it."""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http, self.headers = http, {"Authorization": f"Bearer {key}"}

    async def submit(self, url: str, idempotency_key: str | None = None) -> str:
        answer = await submit(
            self.http, self.headers, url, idempotency_key=idempotency_key, expect=(200, 202)
        )
        return answer["jobId"]

    async def status(self, job_id: str) -> dict[str, object]:
        body: dict[str, object] = (await self.http.get(f"/api/reports/{job_id}", headers=self.headers)).json()
        return body

    async def wait_for(self, job_id: str, check: str, timeout: float = 40) -> dict[str, object]:
        """Polls until the job's state (or stage, for 'rendering') is ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(job_id)
            if check in (status["state"], status["stage"]):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} never reached {check}: {status}")
            await asyncio.sleep(0.02)

    async def usage(self) -> dict[str, int]:
        body: dict[str, int] = (await self.http.get("/api/usage", headers=self.headers)).json()
        return body


async def new_key(env: dict[str, str], user: str) -> str:
    """A pro key minted through the store the CLI uses, in this process: one Python start-up less per
    test (the CLI itself is tested in test_e2e.py)."""
    return await create_key(make_settings(env["REDIS_URL"], Path(env["DATA_DIR"])), user, "pro")


class Serving(NamedTuple):
    client: Client  # its ``http`` is open on the API's address
    worker: ServiceProcess


@asynccontextmanager
async def api_and_worker(
    env: dict[str, str],
    processes: list[ServiceProcess],
    logs: Path,
    user: str,
    *,
    worker: str = "worker",
    ready: bool = False,
) -> AsyncIterator[Serving]:
    """The API process and one worker named ``worker`` (both in ``processes``: killed at the test's
    end), then a client with a fresh pro key of ``user``; ``ready``: the worker has started up first."""
    api, url = await start_api(env, logs)
    processes.append(api)
    started = start_worker(env, logs, name=worker)
    processes.append(started)
    if ready:
        await wait_for_worker_ready(started)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield Serving(Client(http, await new_key(env, user)), started)


def stored_pdfs(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["DATA_DIR"]) / "files" / "reports").glob("*"))
