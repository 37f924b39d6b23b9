"""The typed client (``service.client``), async and sync, against the live API on a real Redis and a
real worker: every call answers the contract's models, errors carry the contract's code, status and
issues, and a pre-signed PDF link is fetched without the key."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.client import (
    ApiUnreachable,
    AsyncReportClient,
    JobResult,
    JobStatus,
    ReportApiError,
    ReportClient,
)
from service.core.settings import Settings
from service.dev.embedded_redis import free_port
from service.report.renderer import PdfRenderer
from tests.api.events.support import LiveApi, live_api, work_off_the_queue
from tests.conftest import LiveServer, create_key

CSV = b"region,revenue,units\nnorth,1200.50,10\nsouth,980.25,8\n"
URL = "https://example.com/data/sales.csv"


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as api:
        yield api


@pytest.fixture
async def client(live: LiveApi, settings: Settings) -> AsyncIterator[AsyncReportClient]:
    async with AsyncReportClient(live.url, await create_key(settings, "dana", "pro")) as opened:
        yield opened


async def test_upload_submit_follow_and_download_a_real_report(
    client: AsyncReportClient, settings: Settings, renderer: PdfRenderer
) -> None:
    uploaded = await client.upload_input(CSV, content_type="text/csv", name="sales.csv")
    assert uploaded.input_data_url.startswith("input://") and uploaded.size == len(CSV)
    assert isinstance(uploaded.expires_at, datetime)
    job = await client.submit(uploaded.input_data_url, idempotency_key="client-test-one")
    again = await client.submit(uploaded.input_data_url, idempotency_key="client-test-one")
    assert (job.replayed, again.replayed) == (False, True)
    assert again.job_id == job.job_id and again.report_id == job.report_id and job.state == "queued"
    waiting = asyncio.create_task(client.wait(job.job_id))
    await work_off_the_queue(settings, renderer)
    done = await asyncio.wait_for(waiting, 20)
    assert isinstance(done, JobStatus) and done.state == "completed" and done.finished
    assert isinstance(done.result, JobResult) and done.result.model == "offline"
    assert (await client.download_pdf(done.result.pdf_url)).startswith(b"%PDF")
    usage = await client.usage()
    assert usage.user_id == "dana" and usage.plan == "pro" and usage.reports == 1
    assert usage.tokens_used == done.result.tokens_used


async def test_the_listing_pages_newest_first_and_cancel_ends_a_job(client: AsyncReportClient) -> None:
    job_ids = []
    for n in range(3):
        await asyncio.sleep(0.002)  # a millisecond of its own: the listing is newest first
        job_ids.append((await client.submit(URL, idempotency_key=f"listing-{n}-abcdef")).job_id)
    first = await client.reports(limit=2)
    assert [item.job_id for item in first.items] == job_ids[:0:-1] and first.next_cursor is not None
    assert [item.job_id async for item in client.all_reports(page_size=1)] == job_ids[::-1]
    cancelled = await client.cancel(job_ids[1])
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert [item.job_id for item in (await client.reports(state="cancelled")).items] == [job_ids[1]]
    with pytest.raises(ReportApiError) as refused:
        await client.cancel(job_ids[1])
    assert (refused.value.status, refused.value.code) == (409, "conflict")


async def test_errors_carry_the_contracts_status_code_and_issues(
    client: AsyncReportClient, live: LiveApi
) -> None:
    with pytest.raises(ReportApiError) as unknown:
        await client.status("0" * 32)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert str(unknown.value).startswith(f"GET /api/reports/{'0' * 32}: 404 ")
    with pytest.raises(ReportApiError) as invalid:
        await client.reports(limit=0)
    assert invalid.value.code == "bad_request" and any("limit" in issue for issue in invalid.value.issues)
    await client.submit(URL, idempotency_key="the-same-key")
    with pytest.raises(ReportApiError) as mismatch:
        await client.submit(URL + "?other", idempotency_key="the-same-key")
    assert (mismatch.value.status, mismatch.value.code) == (422, "idempotency_key_mismatch")
    with pytest.raises(ReportApiError) as no_stream:
        async for _ in client.events("f" * 32):
            pass
    assert (no_stream.value.status, no_stream.value.code) == (404, "not_found")
    async with AsyncReportClient(live.url, "rsk_not_a_key") as stranger:
        with pytest.raises(ReportApiError) as anonymous:
            await stranger.usage()
    assert (anonymous.value.status, anonymous.value.code) == (401, "unauthorized")


async def test_an_api_nobody_answers_is_api_unreachable() -> None:
    async with AsyncReportClient(f"http://127.0.0.1:{free_port()}", "rsk_x", timeout=2) as client:
        with pytest.raises(ApiUnreachable, match="GET /api/usage"):
            await client.usage()


async def test_a_pdf_link_on_another_host_is_fetched_without_the_key(client: AsyncReportClient) -> None:
    seen: list[str | None] = []

    async def bucket(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return Response(b"%PDF-signed", media_type="application/pdf")

    async with LiveServer(Starlette(routes=[Route("/signed.pdf", bucket)])) as store:
        assert await client.download_pdf(f"{store.url}/signed.pdf?X-Amz-Signature=abc") == b"%PDF-signed"
    assert seen == [None]


def blocking_session(
    url: str, key: str, tmp_path: Path, queued: threading.Event
) -> tuple[str, list[str], int]:
    """Everything the sync client does, in a thread of its own (the API runs in the test's loop)."""
    with ReportClient(url, key) as client:
        uploaded = client.upload_input(CSV, name="sales.csv")
        other = client.submit(URL)
        cancelled = client.cancel(other.job_id).state
        time.sleep(0.002)  # a millisecond of its own: the listing is newest first
        job = client.submit(uploaded.input_data_url, idempotency_key="sync-client-one")
        queued.set()  # now the worker may run: the cancelled job is out of its queue
        listed = [item.job_id for item in client.all_reports(page_size=1)]
        assert listed == [job.job_id, other.job_id] and cancelled == "cancelled"
        done = client.wait(job.job_id, poll_seconds=0.1, timeout=30)
        assert done.result is not None
        (tmp_path / "sync.pdf").write_bytes(client.download_pdf(done.result.pdf_url))
        return done.state, listed, client.usage().reports


async def test_the_sync_client_does_the_same_from_blocking_code(
    live: LiveApi, settings: Settings, renderer: PdfRenderer, tmp_path: Path
) -> None:
    key = await create_key(settings, "erin", "free")
    queued = threading.Event()
    session = asyncio.create_task(asyncio.to_thread(blocking_session, live.url, key, tmp_path, queued))
    assert await asyncio.to_thread(queued.wait, 20)
    await work_off_the_queue(settings, renderer)
    state, listed, reports = await asyncio.wait_for(session, 40)
    assert state == "completed" and len(listed) == 2 and reports == 1
    assert (tmp_path / "sync.pdf").read_bytes().startswith(b"%PDF")


async def test_submitting_to_the_batch_lane_is_a_different_payload_for_the_same_key(
    client: AsyncReportClient,
) -> None:
    uploaded = await client.upload_input(CSV, content_type="text/csv", name="sales.csv")
    job = await client.submit(uploaded.input_data_url, idempotency_key="client-lane-1", lane="batch")
    again = await client.submit(uploaded.input_data_url, idempotency_key="client-lane-1", lane="batch")
    assert (job.replayed, again.replayed, again.job_id) == (False, True, job.job_id)
    with pytest.raises(ReportApiError) as refused:
        await client.submit(uploaded.input_data_url, idempotency_key="client-lane-1")
    assert refused.value.code == "idempotency_key_mismatch"
