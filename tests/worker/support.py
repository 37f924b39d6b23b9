"""What the pipeline tests share: an input, PDF text read back, a burst worker run, a status poll."""

from __future__ import annotations

import io

import httpx
from pypdf import PdfReader

from service.core.settings import Settings
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from service.store.jobs import member_of
from service.worker.resources import WorkerDeps
from service.worker.runtime import WorkerRuntime
from tests.conftest import run_burst_worker, worker_deps

CSV = "region,revenue,units\nnorth,1200.50,10\nsouth,980.25,8\nMARKER-pipeline,1500,12\n"


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


async def status(api: httpx.AsyncClient, key: dict[str, str], job_id: str) -> dict[str, object]:
    response = await api.get(f"/api/reports/{job_id}", headers=key)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def run(settings: Settings, renderer: PdfRenderer, provider: OfflineProvider | None = None) -> None:
    async with worker_deps(settings, renderer, provider) as deps:
        await run_burst_worker(settings, deps)


async def run_once(deps: WorkerDeps, job_id: str) -> str:
    """One attempt of the job, claimed and run as the worker's runtime does; returns its state after."""
    record = await deps.jobs.get(job_id)
    assert record is not None
    await WorkerRuntime(deps).claim(member_of(record))
    task = deps.running.tasks.get(job_id)
    if task is not None:
        await task
    return (await deps.jobs.get(job_id) or {}).get("state", "missing")
