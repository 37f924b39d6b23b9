"""The whole path with real processes: the CLI mints a key, the API and an arq worker run as the
Procfile starts them, the model is the real SDK talking to the fake Anthropic server, and the PDF
that comes back over HTTP holds what the model wrote."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from tests.conftest import InputFiles
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.processes import (
    ServiceProcess,
    cli,
    service_env,
    start_api,
    start_worker,
    wait_for_worker_ready,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def env(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> dict[str, str]:
    return service_env(
        redis_url,
        tmp_path / "data",
        ANTHROPIC_API_KEY="sk-ant-e2e",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        WORKER_GRACE_SECONDS="10",
    )


def new_key(env: dict[str, str], user: str, plan: str) -> str:
    created = cli(env, "keys", "create", "--user", user, "--plan", plan)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


async def wait_for_state(
    client: httpx.AsyncClient, key: str, job_id: str, states: set[str], timeout: float = 30
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/reports/{job_id}", headers={"Authorization": f"Bearer {key}"})
        body: dict[str, object] = response.json()
        if body["state"] in states:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"job still {body['state']} after {timeout}s: {body}")
        await asyncio.sleep(0.1)


async def test_report_from_post_to_pdf_with_real_processes(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    key = new_key(env, "erin", "pro")
    assert key.startswith("rsk_")
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    source = inputs.add("q3.csv", "quarter,sales\nQ3,100\nMARKER-e2e,5\n")

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        started = time.perf_counter()
        accepted = await client.post(
            "/api/reports", json={"inputDataUrl": source}, headers={"Authorization": f"Bearer {key}"}
        )
        assert accepted.status_code == 202
        assert time.perf_counter() - started < 1.0
        job_id = accepted.json()["jobId"]
        done = await wait_for_state(client, key, job_id, {"completed", "failed"})
        assert done["state"] == "completed", (done, worker.log())
        pdf = await client.get(f"/api/reports/{job_id}/pdf", headers={"Authorization": f"Bearer {key}"})
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "MARKER-e2e" in text
    assert fake_anthropic.call_count == 1

    worker.signal(signal.SIGTERM)
    api.signal(signal.SIGTERM)
    assert await worker.wait(15) == 0
    # uvicorn re-raises the signal after a clean shutdown, so its status says "terminated by SIGTERM".
    assert await api.wait(15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in api.log()
    assert "sk-ant-e2e" not in worker.log() + api.log()
    assert key not in api.log()


async def test_keys_cli_lists_and_revokes(env: dict[str, str]) -> None:
    key = new_key(env, "frank", "free")
    listed = cli(env, "keys", "list")
    assert listed.returncode == 0 and "frank" in listed.stdout and key not in listed.stdout
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if "frank" in line)
    revoked = cli(env, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = cli(env, "keys", "revoke", "nope")
    assert missing.returncode == 1
    bad_plan = cli(env, "keys", "create", "--user", "x", "--plan", "gold")
    assert bad_plan.returncode != 0


async def test_sigterm_lets_a_running_job_finish_and_leaves_new_ones(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    fake_anthropic.first_byte_delay = 2.0
    key = new_key(env, "gina", "pro")
    headers = {"Authorization": f"Bearer {key}"}
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    await wait_for_worker_ready(worker)
    source = inputs.add("slow.csv", "a,b\n1,2\n")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = (await client.post("/api/reports", json={"inputDataUrl": source}, headers=headers)).json()[
            "jobId"
        ]
        await wait_for_state(client, key, first, {"active"})
        while fake_anthropic.call_count == 0:  # the model call is under way
            await asyncio.sleep(0.05)
        worker.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        second = (await client.post("/api/reports", json={"inputDataUrl": source}, headers=headers)).json()[
            "jobId"
        ]
        assert await worker.wait(15) == 0
        assert (await wait_for_state(client, key, first, {"completed", "failed"}, timeout=1))[
            "state"
        ] == "completed"
        left = await wait_for_state(client, key, second, {"queued", "active", "completed"}, timeout=1)
        assert left["state"] == "queued" and left["attempts"] == 0
    assert fake_anthropic.call_count == 1


async def test_sigterm_past_the_grace_hands_the_job_back_without_spending_an_attempt(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    fake_anthropic.first_byte_delay = 4.0
    env = {**env, "WORKER_GRACE_SECONDS": "0.5"}
    key = new_key(env, "hank", "pro")
    headers = {"Authorization": f"Bearer {key}"}
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    source = inputs.add("slow.csv", "a,b\n1,2\n")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        job_id = (await client.post("/api/reports", json={"inputDataUrl": source}, headers=headers)).json()[
            "jobId"
        ]
        while fake_anthropic.call_count == 0:
            await asyncio.sleep(0.05)
        worker.signal(signal.SIGTERM)
        assert await worker.wait(10) == 0
        handed_back = await wait_for_state(client, key, job_id, {"queued"}, timeout=1)
        assert handed_back["attempts"] == 0

        fake_anthropic.first_byte_delay = 0.0
        successor = start_worker(env, tmp_path / "logs", name="successor")
        processes.append(successor)
        done = await wait_for_state(client, key, job_id, {"completed", "failed"})
        assert (done["state"], done["attempts"]) == ("completed", 1), successor.log()


async def test_a_deploy_during_rendering_hands_back_and_the_model_is_not_called_again(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    parts = (f"## Part {i}\n\n" + "All figures rose. " * 120 for i in range(200))
    long_report = "# Long report\n\n" + "\n\n".join(parts)
    fake_anthropic.reply = lambda body: long_report  # about a second of rendering
    env = {**env, "WORKER_GRACE_SECONDS": "0.1", "MAX_OUTPUT_TOKENS": "128000"}
    key = new_key(env, "ivy", "pro")
    headers = {"Authorization": f"Bearer {key}"}
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    source = inputs.add("long.csv", "a,b\n1,2\n")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/api/reports", json={"inputDataUrl": source}, headers=headers)
        job_id = response.json()["jobId"]
        while (await client.get(f"/api/reports/{job_id}", headers=headers)).json()["stage"] != "rendering":
            await asyncio.sleep(0.02)
        worker.signal(signal.SIGTERM)
        assert await worker.wait(10) == 0
        assert (await wait_for_state(client, key, job_id, {"queued"}, timeout=1))["attempts"] == 0
        successor = start_worker(env, tmp_path / "logs", name="successor")
        processes.append(successor)
        done = await wait_for_state(client, key, job_id, {"completed", "failed"})
    assert (done["state"], done["attempts"]) == ("completed", 1)
    assert fake_anthropic.call_count == 1  # the second attempt resumed from the saved answer
