"""Cancelling: a running job is aborted mid-call and billed nothing; what the logs say about jobs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import structlog

from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from tests.conftest import InputFiles, bearer, create_key, make_settings, run_burst_worker, worker_deps
from tests.fakes.anthropic import FakeAnthropic


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        anthropic_api_key="sk-ant-secret-1",
        anthropic_base_url=fake_anthropic.base_url,
    )


async def test_cancelling_an_active_job_aborts_it_and_bills_nothing(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer,
    fake_anthropic: FakeAnthropic,
) -> None:  # fmt: skip
    fake_anthropic.first_byte_delay = 5.0
    key = bearer(await create_key(settings, "paul", "pro"))
    accepted = await api.post(
        "/api/reports", json={"inputDataUrl": inputs.add("a.csv", "x\n1\n")}, headers=key
    )
    job_id = accepted.json()["jobId"]
    async with worker_deps(settings, renderer) as deps:
        worker = asyncio.create_task(run_burst_worker(settings, deps))
        while fake_anthropic.call_count == 0:
            await asyncio.sleep(0.01)
        cancelled = await api.delete(f"/api/reports/{job_id}", headers=key)
        assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
        await asyncio.wait_for(worker, timeout=3)  # aborted at once, not after the 5 s model call
    status = (await api.get(f"/api/reports/{job_id}", headers=key)).json()
    assert (status["state"], status["result"]) == ("cancelled", None)
    assert (await api.get("/api/usage", headers=key)).json()["reports"] == 0
    assert (await api.get(f"/api/reports/{job_id}/pdf", headers=key)).status_code == 409
    assert (await api.delete(f"/api/reports/{job_id}", headers=key)).status_code == 409


async def test_job_logs_carry_ids_durations_and_tokens_but_never_keys_or_input(
    api: httpx.AsyncClient, settings: Settings, inputs: InputFiles, renderer: PdfRenderer
) -> None:
    api_key = await create_key(settings, "quinn", "pro")
    source = inputs.add("secret.csv", "name,salary\nSECRET-ROW-CONTENT,100\n")
    job_id = (await api.post("/api/reports", json={"inputDataUrl": source}, headers=bearer(api_key))).json()[
        "jobId"
    ]
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with worker_deps(settings, renderer) as deps:
            await run_burst_worker(settings, deps)
    stages = {entry["stage"]: entry for entry in logs if entry["event"] == "job_stage"}
    assert set(stages) == {"fetching", "summarizing", "rendering", "storing"}
    for entry in stages.values():
        assert (
            entry["job_id"] == job_id
            and entry["user_id"] == "quinn"
            and entry["report_id"].startswith("rep_")
        )
        assert entry["duration_ms"] >= 0
    completed = next(entry for entry in logs if entry["event"] == "job_completed")
    assert completed["input_tokens"] > 0 and completed["output_tokens"] > 0
    everything = json.dumps(logs, default=str)
    for secret in (api_key, "sk-ant-secret-1", "SECRET-ROW-CONTENT"):
        assert secret not in everything
