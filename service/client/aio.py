"""``AsyncReportClient``: the API from asyncio code, with typed answers.

async with AsyncReportClient("http://127.0.0.1:8000", key) as client:
    job = await client.submit("https://example.com/sales.csv", idempotency_key="sales-2026-12")
    status = await client.wait(job.job_id)   # follows the job's events to its end
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import httpx

from service.client import calls
from service.client.calls import ApiUnreachable, Call, ReportApiError, Submission
from service.client.sse import SseEvent, StreamRefused, follow
from service.core.schemas import InputUploaded, JobStatus, Lane, ReportPage, State, Usage

T = TypeVar("T")


class AsyncReportClient:
    """One connection pool to one API, authenticated with one key. ``transport`` is httpx's, for
    tests and proxies."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncReportClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T], http: httpx.AsyncClient | None = None) -> T:
        http = http or self._http
        try:
            response = await http.send(call.request(http))
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"{call.method} {call.path}: {exc or type(exc).__name__}") from exc
        return call.answer(response)

    async def upload_input(
        self, content: bytes, *, content_type: str = "text/csv", name: str | None = None
    ) -> InputUploaded:
        """``POST /api/inputs``: its ``input_data_url`` is usable in ``submit`` until it expires."""
        return await self._run(calls.upload(content, content_type, name))

    async def submit(
        self, input_data_url: str, *, idempotency_key: str | None = None, lane: Lane = "realtime"
    ) -> Submission:
        """``POST /api/reports``; ``replayed`` tells a replay of the same key from a new job."""
        return await self._run(calls.submit(input_data_url, idempotency_key, lane))

    async def status(self, job_id: str) -> JobStatus:
        return await self._run(calls.status(job_id))

    async def cancel(self, job_id: str) -> JobStatus:
        return await self._run(calls.cancel(job_id))

    async def reports(
        self, *, limit: int | None = None, cursor: str | None = None, state: State | None = None
    ) -> ReportPage:
        """One page of the caller's jobs, newest first; pass ``next_cursor`` on for the next."""
        return await self._run(calls.listing(limit, cursor, state))

    async def all_reports(
        self, *, state: State | None = None, page_size: int = 100
    ) -> AsyncIterator[JobStatus]:
        """Every job of the caller's, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.reports(limit=page_size, cursor=cursor, state=state)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def usage(self) -> Usage:
        return await self._run(calls.usage())

    async def events(self, job_id: str) -> AsyncIterator[SseEvent]:
        """The job's events to its terminal one, resuming with Last-Event-ID when the connection drops."""
        try:
            async for event in follow(self._http, calls.events_path(job_id), {}):
                yield event
        except StreamRefused as exc:
            name = f"GET {calls.events_path(job_id)}"
            if exc.status == 0:
                raise ApiUnreachable(f"{name}: {exc.message}") from exc
            raise ReportApiError(name, exc.status, exc.code, exc.message) from exc
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"GET {calls.events_path(job_id)}: {exc}") from exc

    async def wait(self, job_id: str) -> JobStatus:
        """Follows the job to its end; its final status."""
        async for _ in self.events(job_id):
            pass
        return await self.status(job_id)

    async def download_pdf(self, pdf_url: str) -> bytes:
        """``result.pdf_url``'s bytes: the API's path with the key, a pre-signed link without it."""
        if calls.is_ours(self._http, pdf_url):
            return await self._run(calls.pdf(pdf_url))
        async with httpx.AsyncClient(timeout=self._http.timeout) as plain:
            return await self._run(calls.pdf(pdf_url), plain)
