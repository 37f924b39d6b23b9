"""Nothing lost, nothing billed twice: real worker processes killed with SIGKILL, a Redis restarted
under load, an API whose Redis vanishes. Every job still completes exactly once."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from pypdf import PdfReader

from service.report.markdown import MAX_CHARS
from service.telemetry.pricing import model_prices
from tests.conftest import InputFiles
from tests.e2e.support import JOB_TIMEOUT, Client, api_and_worker, new_key, stored_pdfs
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.processes import (
    ServiceProcess,
    start_api,
    start_worker,
    wait_for_worker_ready,
)

pytestmark = pytest.mark.slow


async def test_kill_9_during_the_model_call_is_picked_up_and_completes_once(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    fake_anthropic.first_byte_delay = 2.0
    async with api_and_worker(env, processes, tmp_path / "logs", "ivan", worker="doomed") as (client, doomed):
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
        f"## Part {i}\n\n" + "All figures rose. " * 120 for i in range(44)
    )
    assert len(long_report) < MAX_CHARS  # rendered whole, so its last part shows the PDF is complete
    fake_anthropic.reply = lambda body: long_report  # about a second of rendering
    env = {**env, "MAX_OUTPUT_TOKENS": "128000"}  # the fake model cuts its answer at max_tokens
    async with api_and_worker(env, processes, tmp_path / "logs", "judy", worker="doomed") as (client, doomed):
        job_id = await client.submit(inputs.add("b.csv", "x,y\n1,2\n"))
        await client.wait_for(job_id, "rendering")
        doomed.process.kill()
        assert stored_pdfs(env) == []  # nothing half-written is left where a reader could find it
        unfinished = await client.http.get(f"/api/reports/{job_id}/pdf", headers=client.headers)
        assert unfinished.status_code == 409
        processes.append(start_worker(env, tmp_path / "logs", name="survivor"))
        await client.wait_for(job_id, "completed", timeout=JOB_TIMEOUT + 30)
        pdf = await client.http.get(f"/api/reports/{job_id}/pdf", headers=client.headers)
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages[-2:])
    assert "Part 43" in text and "not shown" not in text  # the whole report, to its last part
    assert fake_anthropic.call_count == 1  # resumed from the checkpoint


async def test_kill_9_mid_answer_counts_each_call_s_cache_reads_and_writes_once_at_their_prices(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The first call writes the cached prefix and streams until its worker is killed; the next
    worker closes it as far as it was recorded and runs the job again, reading the prefix. Usage
    counts both calls' cache tokens, each once, and prices each kind at its own rate."""
    fake_anthropic.prompt_cache.minimum = lambda model: 0  # the fake caches the short system prompt
    fake_anthropic.reply = lambda body: "# Report\n\n" + "Sales rose in every region. " * 150
    fake_anthropic.chunk_delay, fake_anthropic.chunk_chars = 0.1, 40  # streams for ~10 s
    env = {**env, "PROMPT_CACHE_MIN_TOKENS": "0", "PROMPT_CACHE_MIN_TOKENS_HAIKU": "0"}
    async with api_and_worker(env, processes, tmp_path / "logs", "cora", worker="doomed") as (client, doomed):
        job_id = await client.submit(inputs.add("f.csv", "x,y\n1,2\n"))
        deadline = time.monotonic() + 20
        while int(str((await client.status(job_id))["progress"])) <= 30:  # text recorded as it streams
            assert time.monotonic() < deadline, "the answer never streamed"
            await asyncio.sleep(0.02)
        doomed.process.kill()
        fake_anthropic.chunk_delay = 0.0
        processes.append(start_worker(env, tmp_path / "logs", name="survivor"))
        done = await client.wait_for(job_id, "completed", timeout=JOB_TIMEOUT + 25)
        usage = await client.usage()
    bill = fake_anthropic.bill.tokens("realtime")
    assert fake_anthropic.call_count == 2
    assert (
        bill.cache_write_tokens > 0 and bill.cache_read_tokens == bill.cache_write_tokens
    )  # wrote, then read
    assert (usage["cacheReadTokens"], usage["cacheWriteTokens"]) == (
        bill.cache_read_tokens,
        bill.cache_write_tokens,
    )
    assert usage["inputTokens"] == fake_anthropic.billed_tokens[0] and usage["reports"] == 1
    result = done["result"]
    assert isinstance(result, dict) and (result["cacheReadTokens"], result["cacheWriteTokens"]) == (
        bill.cache_read_tokens, 0
    )  # fmt: skip
    prices = model_prices(str(result["model"]))
    assert prices is not None
    uncached = usage["inputTokens"] - usage["cacheReadTokens"] - usage["cacheWriteTokens"]
    micro_usd = (
        uncached * prices.input
        + usage["cacheReadTokens"] * prices.cache_read
        + usage["cacheWriteTokens"] * prices.cache_write
        + usage["outputTokens"] * prices.output
    )
    assert usage["costUsd"] == pytest.approx(micro_usd / 1_000_000, abs=2e-6)


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
        client = Client(http, await new_key(env, "kate"))
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
    # Usage counts every paid call once: each report's own call, plus what the calls cut by a kill had
    # spent when the worker last recorded them (never more than the provider billed for them).
    assert sum(r["tokensUsed"] for r in results) <= usage["tokensUsed"] <= sum(fake_anthropic.billed_tokens)  # type: ignore[index]
    assert jobs <= fake_anthropic.call_count <= jobs + kills * concurrency


async def test_twenty_concurrent_identical_posts_make_one_job_and_one_model_call(
    env: dict[str, str], processes: list[ServiceProcess], inputs: InputFiles, fake_anthropic: FakeAnthropic,
    tmp_path: Path, redis_url: str,
) -> None:  # fmt: skip
    async with api_and_worker(env, processes, tmp_path / "logs", "olga") as (client, _):
        source = inputs.add("e.csv", "x,y\n1,2\n")
        body = {"inputDataUrl": source, "idempotencyKey": "same-key-20x"}
        responses = await asyncio.gather(
            *(client.http.post("/api/reports", json=body, headers=client.headers) for _ in range(20))
        )
        assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
        assert len({r.json()["jobId"] for r in responses}) == 1
        assert len({r.json()["reportId"] for r in responses}) == 1
        await client.wait_for(responses[0].json()["jobId"], "completed")
        again = await client.http.post("/api/reports", json=body, headers=client.headers)
        assert (again.status_code, again.json()["state"]) == (200, "completed")
    assert fake_anthropic.call_count == 1
    store = aioredis.Redis.from_url(redis_url)
    records = [key async for key in store.scan_iter("rs:job:*", _type="hash")]
    assert len(records) == 1  # one job
    record = await store.hgetall(records[0])
    [call] = [value for field, value in record.items() if field.startswith(b"call:")]
    assert json.loads(call)[0] == "answered"  # a closed call: [outcome, input, output, request id]
    await store.aclose()


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state, past the command's ")"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


def pool_processes(of: int) -> set[int]:
    """The render-pool processes (fork server and pool workers) descending from process ``of``:
    other workers on the machine (another suite, a developer's ``make run``) do not count."""
    pool = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
        if b"multiprocessing.forkserver" not in command:
            continue
        pid = int(entry.name)
        ancestor: int | None = pid
        while ancestor is not None and ancestor > 1:
            if ancestor == of:
                pool.add(pid)
                break
            ancestor = _parent_of(ancestor)
    return pool


async def test_a_killed_worker_leaves_no_orphaned_render_processes(
    env: dict[str, str], processes: list[ServiceProcess], tmp_path: Path
) -> None:
    worker = start_worker(env, tmp_path / "logs")
    processes.append(worker)
    await wait_for_worker_ready(worker)
    await asyncio.sleep(0.5)  # the pool's warm-up render has started its process
    pool = pool_processes(of=worker.process.pid)
    assert pool  # the worker has its own
    worker.process.kill()
    worker.process.wait()  # reaped, as a supervisor would: until then a dead process still has its pid
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pool) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not [pid for pid in pool if _alive(pid)]  # the pool went with its worker
