"""``python -m service submit`` against a real API and worker: upload, progress, PDF, failure reasons,
and resuming the event stream with Last-Event-ID after the connection drops."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from service.client.sse import SseEvent, follow
from service.core.settings import Settings
from service.report.renderer import PdfRenderer
from service.store.jobs import JobStore
from tests.api.events.support import complete, ids, live_api, start, work_off_the_queue
from tests.conftest import InputFiles, bearer, create_key
from tests.fakes.processes import ROOT

CSV = "region,revenue,units\nnorth,1200.50,10\nsouth,980.25,8\n"


async def run_cli(*args: str, key: str) -> asyncio.subprocess.Process:
    # Only what the CLI needs: nothing from the developer's shell (REPORT_API_URL, say) leaks in.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(ROOT), "REPORT_API_KEY": key}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "submit", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_submit_uploads_a_file_follows_it_and_saves_the_pdf(
    settings: Settings, renderer: PdfRenderer, tmp_path: Path
) -> None:
    key = await create_key(settings, "carol", "pro")
    source = tmp_path / "sales.csv"
    source.write_text(CSV)
    out = tmp_path / "report.pdf"
    async with live_api(settings) as live:
        cli = await run_cli(str(source), "--follow", "--out", str(out), "--api", live.url, key=key)
        await work_off_the_queue(settings, renderer)
        stdout, stderr = await asyncio.wait_for(cli.communicate(), 30)
    assert cli.returncode == 0, stderr.decode()
    assert out.read_bytes().startswith(b"%PDF")
    assert "completed: offline" in stdout.decode()
    assert "done" in stderr.decode() and "100%" in stderr.decode()  # the progress bar's last state
    assert key not in stdout.decode() + stderr.decode()


async def test_submit_exits_non_zero_with_the_reason_when_the_job_fails(
    settings: Settings, renderer: PdfRenderer, inputs: InputFiles
) -> None:
    key = await create_key(settings, "carol", "pro")
    async with live_api(settings) as live:
        missing = f"{inputs.base_url}/files/missing.csv"
        cli = await run_cli(missing, "--follow", "--api", live.url, key=key)
        await work_off_the_queue(settings, renderer)
        _, stderr = await asyncio.wait_for(cli.communicate(), 30)
    assert cli.returncode == 1
    assert "failed" in stderr.decode() and "404" in stderr.decode()


async def test_submit_refuses_a_missing_file_and_a_bad_key_with_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    async with live_api(settings) as live:
        missing = await run_cli(str(tmp_path / "nope.csv"), "--api", live.url, key="rsk_whatever")
        _, missing_err = await missing.communicate()
        source = tmp_path / "a.csv"
        source.write_text(CSV)
        bad_key = await run_cli(str(source), "--api", live.url, key="rsk_not_a_key")
        _, bad_key_err = await bad_key.communicate()
    assert missing.returncode == 1 and "no such file" in missing_err.decode().lower()
    assert bad_key.returncode == 1 and "401" in bad_key_err.decode()
    assert "Traceback" not in missing_err.decode() + bad_key_err.decode()


class CuttingProxy:
    """A TCP proxy on loopback that drops the first connection once an event has gone through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # A handler still relaying when the test ends must not leave its sockets to the garbage
        # collector of a later test's loop (a ResourceWarning that fails that test instead).
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.add(up_writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            up_writer.write(head)
            cut = len(self.requests) == 1
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
                if cut and b"event:" in chunk:
                    break  # the connection "drops" right after the first event
        finally:
            writer.close()
            up_writer.close()


@pytest.fixture
async def driver(settings: Settings) -> AsyncIterator[JobStore]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield JobStore(client)
    await client.aclose()


async def test_following_resumes_with_last_event_id_after_the_connection_drops(
    settings: Settings, driver: JobStore
) -> None:
    alice = bearer(await create_key(settings, "alice", "pro"))
    async with live_api(settings) as live, CuttingProxy(live.server.port) as proxy:
        body = {"inputDataUrl": "https://example.com/a.csv"}
        accepted = await live.client.post("/api/reports", json=body, headers=alice)
        job_id = accepted.json()["jobId"]
        await start(driver, job_id)
        received: list[SseEvent] = []

        async def consume() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port}") as client:
                async for event in follow(client, f"/api/reports/{job_id}/events", alice):
                    received.append(event)

        consumer = asyncio.create_task(consume())
        async with asyncio.timeout(5):
            while not received:
                await asyncio.sleep(0.01)
        await driver.advance(job_id, stage="summarizing", progress=40)  # while it is disconnected
        await driver.advance(job_id, stage="rendering", progress=70)
        async with asyncio.timeout(5):
            while len(proxy.requests) < 2 or len(received) < 3:
                await asyncio.sleep(0.01)
        await complete(driver, job_id)
        await asyncio.wait_for(consumer, 5)
    assert [event.json().get("progress") for event in received[:3]] == [10, 40, 70]
    assert [event.event for event in received[3:]] == ["progress", "completed"]
    assert len(set(ids(received))) == len(received)
    assert f"last-event-id: {received[0].id}".encode() in proxy.requests[1].lower()
