"""Nothing lost, nothing billed twice: real worker processes killed with SIGKILL, a Redis restarted
under load, an API whose Redis vanishes. Every job still completes exactly once."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from pypdf import PdfReader

from service.dev.embedded_redis import EmbeddedRedis
from tests.conftest import InputFiles, submit
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

JOB_TIMEOUT = 3  # a dead worker's job runs again about JOB_TIMEOUT + 5 s later


@pytest.fixture
def env(redis_url: str, tmp_path: Path, fake_anthropic: FakeAnthropic) -> dict[str, str]:
    return service_env(
        redis_url,
        tmp_path / "data",
        ANTHROPIC_API_KEY="sk-ant-resilience",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        JOB_TIMEOUT_SECONDS=str(JOB_TIMEOUT),
        WORKER_GRACE_SECONDS="5",
    )


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


def new_key(env: dict[str, str], user: str) -> str:
    created = cli(env, "keys", "create", "--user", user, "--plan", "pro")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def stored_pdfs(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["DATA_DIR"]) / "files" / "reports").glob("*"))


async def test_kill_9_during_the_model_call_is_picked_up_and_completes_once(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    fake_anthropic.first_byte_delay = 2.0
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    doomed = start_worker(env, tmp_path / "logs", name="doomed")
    processes.append(doomed)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        client = Client(http, new_key(env, "ivan"))
        job_id = await client.submit(inputs.add("a.csv", "x,y\n1,2\n"))
        await client.wait_for(job_id, "summarizing")
        while fake_anthropic.call_count == 0:  # the paid call is under way
            await asyncio.sleep(0.01)
        doomed.process.kill()
        fake_anthropic.first_byte_delay = 0.0
        processes.append(start_worker(env, tmp_path / "logs", name="survivor"))
        killed_at = time.monotonic()
        done = await client.wait_for(job_id, "completed", timeout=JOB_TIMEOUT + 25)
        assert time.monotonic() - killed_at >= JOB_TIMEOUT  # not before the dead worker's lease ran out
        assert done["attempts"] == 1  # a crash is not a failed attempt
        assert (await client.usage())["reports"] == 1
    assert fake_anthropic.call_count == 2  # the first call never answered: it was cut off by the kill


async def test_kill_9_after_the_model_answered_never_calls_it_again_nor_serves_a_partial_pdf(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    long_report = "# Long report\n\n" + "\n\n".join(
        f"## Part {i}\n\n" + "All figures rose. " * 120 for i in range(200)
    )
    fake_anthropic.reply = lambda body: long_report  # about a second of rendering
    env = {**env, "MAX_OUTPUT_TOKENS": "128000"}  # the fake model cuts its answer at max_tokens
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    doomed = start_worker(env, tmp_path / "logs", name="doomed")
    processes.append(doomed)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        client = Client(http, new_key(env, "judy"))
        job_id = await client.submit(inputs.add("b.csv", "x,y\n1,2\n"))
        await client.wait_for(job_id, "rendering")
        doomed.process.kill()
        assert stored_pdfs(env) == []  # nothing half-written is left where a reader could find it
        assert (await http.get(f"/api/reports/{job_id}/pdf", headers=client.headers)).status_code == 409
        processes.append(start_worker(env, tmp_path / "logs", name="survivor"))
        await client.wait_for(job_id, "completed", timeout=JOB_TIMEOUT + 30)
        pdf = await http.get(f"/api/reports/{job_id}/pdf", headers=client.headers)
    assert "Part 199" in PdfReader(io.BytesIO(pdf.content)).pages[-1].extract_text()
    assert fake_anthropic.call_count == 1  # resumed from the checkpoint


CHAOS_DEADLINE_SECONDS = 120  # the test's own, well inside its pytest timeout: its message must show


@pytest.mark.timeout(CHAOS_DEADLINE_SECONDS + 60)
async def test_chaos_sigkill_every_few_seconds_loses_nothing_and_bills_each_report_once(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    jobs, concurrency = 100, 2
    fake_anthropic.first_byte_delay = 0.2
    env = {**env, "WORKER_CONCURRENCY": str(concurrency)}
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    workers = [start_worker(env, tmp_path / "logs", name=f"w{i}") for i in range(2)]
    processes.extend(workers)
    kills = 0
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        client = Client(http, new_key(env, "kate"))
        source = inputs.add("c.csv", "x,y\n1,2\n")
        job_ids = [await client.submit(source) for _ in range(jobs)]
        deadline = time.monotonic() + CHAOS_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            states = [str((await client.status(job_id))["state"]) for job_id in job_ids]
            if all(state == "completed" for state in states):
                break
            assert "failed" not in states, states
            if kills < 8:
                victim = workers[kills % 2]
                victim.process.kill()
                kills += 1
                workers[kills % 2 - 1] = start_worker(env, tmp_path / "logs", name=f"w{kills}-restarted")
                processes.append(workers[kills % 2 - 1])
            await asyncio.sleep(2)
        unfinished = Counter(state for state in states if state != "completed")
        assert not unfinished, (
            f"after {CHAOS_DEADLINE_SECONDS}s and {kills} kills, not completed: {unfinished}"
        )
        results = [(await client.status(job_id))["result"] for job_id in job_ids]
        usage = await client.usage()
    assert usage["reports"] == jobs
    assert usage["tokensUsed"] == sum(r["tokensUsed"] for r in results)  # type: ignore[index]
    assert jobs <= fake_anthropic.call_count <= jobs + kills * concurrency


async def test_a_redis_restart_under_load_loses_no_job(
    processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    anthropic = {"ANTHROPIC_API_KEY": "sk-ant-r", "ANTHROPIC_BASE_URL": fake_anthropic.base_url}
    env = service_env(server.url, tmp_path / "data", JOB_TIMEOUT_SECONDS=str(JOB_TIMEOUT), **anthropic)
    fake_anthropic.first_byte_delay = 0.3
    try:
        api, url = await start_api(env, tmp_path / "logs")
        processes.append(api)
        processes.append(start_worker(env, tmp_path / "logs"))
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            client = Client(http, new_key(env, "liam"))
            source = inputs.add("d.csv", "x,y\n1,2\n")
            job_ids = [await client.submit(source) for _ in range(20)]
            await client.wait_for(job_ids[0], "completed")
            server.stop()  # SIGTERM: Redis flushes its append-only file
            await asyncio.sleep(1)
            server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=True)
            server.start()
            job_ids += [await client.submit(source) for _ in range(5)]
            for job_id in job_ids:
                assert (await client.wait_for(job_id, "completed", timeout=60))["state"] == "completed"
            assert (await client.usage())["reports"] == 25
    finally:
        server.stop()


async def test_the_api_answers_503_fast_while_redis_is_down_and_recovers_by_itself(
    processes: list[ServiceProcess], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    env = service_env(server.url, tmp_path / "data")
    key = new_key(env, "mia")
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    body = {"inputDataUrl": "https://example.com/x.csv"}
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            assert (await http.post("/api/reports", json=body, headers=headers)).status_code == 202
            server.kill()
            for path in ("/readyz", "/api/usage"):
                started = time.monotonic()
                response = await http.get(path, headers=headers)
                assert time.monotonic() - started < 2.0
                assert (response.status_code, response.json()["error"]) == (503, "unavailable")
                assert response.headers["retry-after"] == "2"
            assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
            server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=True)
            server.start()
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.post("/api/reports", json=body, headers=headers)).status_code == 202
    finally:
        server.stop()


async def test_a_hung_redis_still_gets_a_503_within_two_seconds(
    processes: list[ServiceProcess], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    env = service_env(server.url, tmp_path / "data")
    key = new_key(env, "noah")
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {key}"}
            assert (await http.get("/api/usage", headers=headers)).status_code == 200
            assert server._process is not None
            server._process.send_signal(signal.SIGSTOP)  # connections stay open; nothing answers
            started = time.monotonic()
            response = await http.get("/api/usage", headers=headers)
            assert response.status_code == 503
            assert time.monotonic() - started < 2.0
            server._process.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.2)
            assert (await http.get("/api/usage", headers=headers)).status_code == 200
    finally:
        server.stop()


async def test_twenty_concurrent_identical_posts_make_one_job_and_one_model_call(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path, redis_url: str,
) -> None:  # fmt: skip
    api, url = await start_api(env, tmp_path / "logs")
    processes.append(api)
    processes.append(start_worker(env, tmp_path / "logs"))
    source = inputs.add("e.csv", "x,y\n1,2\n")
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        client = Client(http, new_key(env, "olga"))
        body = {"inputDataUrl": source, "idempotencyKey": "same-key-20x"}
        responses = await asyncio.gather(
            *(http.post("/api/reports", json=body, headers=client.headers) for _ in range(20))
        )
        assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
        assert len({r.json()["jobId"] for r in responses}) == 1
        assert len({r.json()["reportId"] for r in responses}) == 1
        await client.wait_for(responses[0].json()["jobId"], "completed")
        again = await http.post("/api/reports", json=body, headers=client.headers)
        assert (again.status_code, again.json()["state"]) == (200, "completed")
    assert fake_anthropic.call_count == 1
    store = aioredis.Redis.from_url(redis_url)
    assert len([key async for key in store.scan_iter("rs:job:*", _type="hash")]) == 1
    await store.aclose()


def pool_processes() -> set[int]:
    """Render-pool processes (fork server and pool workers) of any worker on this machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
        if b"multiprocessing.forkserver" in command:
            found.add(int(entry.name))
    return found


async def test_a_killed_worker_leaves_no_orphaned_render_processes(
    env: dict[str, str], processes: list[ServiceProcess], tmp_path: Path
) -> None:
    before = pool_processes()
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    await wait_for_worker_ready(worker)
    await asyncio.sleep(0.5)  # the pool's warm-up render has started its process
    assert pool_processes() - before  # the worker has its own
    worker.process.kill()
    worker.process.wait()  # reaped, as a supervisor would: until then a dead process still has its pid
    deadline = time.monotonic() + 5
    while pool_processes() - before and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not pool_processes() - before
