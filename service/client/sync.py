"""``ReportClient``: the API from blocking code, with typed answers (the same calls as
``AsyncReportClient``; ``wait`` polls the status instead of following events).

    with ReportClient("http://127.0.0.1:8000", key) as client:
        job = client.submit("https://example.com/sales.csv")
        print(client.wait(job.job_id).result)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TypeVar

import httpx

from service.client import calls
from service.client.calls import ApiUnreachable, Call, ReportClientError, Submission
from service.core.schemas import InputUploaded, JobStatus, Lane, ReportPage, State, Usage

T = TypeVar("T")


class ReportClient:
    """One connection pool to one API, authenticated with one key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> ReportClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T], http: httpx.Client | None = None) -> T:
        http = http or self._http
        try:
            response = http.send(call.request(http))
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"{call.method} {call.path}: {exc or type(exc).__name__}") from exc
        return call.answer(response)

    def upload_input(
        self, content: bytes, *, content_type: str = "text/csv", name: str | None = None
    ) -> InputUploaded:
        return self._run(calls.upload(content, content_type, name))

    def submit(
        self, input_data_url: str, *, idempotency_key: str | None = None, lane: Lane = "realtime"
    ) -> Submission:
        return self._run(calls.submit(input_data_url, idempotency_key, lane))

    def status(self, job_id: str) -> JobStatus:
        return self._run(calls.status(job_id))

    def cancel(self, job_id: str) -> JobStatus:
        return self._run(calls.cancel(job_id))

    def reports(
        self, *, limit: int | None = None, cursor: str | None = None, state: State | None = None
    ) -> ReportPage:
        return self._run(calls.listing(limit, cursor, state))

    def all_reports(self, *, state: State | None = None, page_size: int = 100) -> Iterator[JobStatus]:
        cursor: str | None = None
        while True:
            page = self.reports(limit=page_size, cursor=cursor, state=state)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def usage(self) -> Usage:
        return self._run(calls.usage())

    def wait(self, job_id: str, *, poll_seconds: float = 1.0, timeout: float | None = None) -> JobStatus:
        """Polls the status until the job ends (or ``timeout`` seconds pass: ``ReportClientError``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (status := self.status(job_id)).finished:
            if deadline is not None and time.monotonic() > deadline:
                raise ReportClientError(f"job {job_id} still {status.state} after {timeout} s")
            time.sleep(poll_seconds)
        return status

    def download_pdf(self, pdf_url: str) -> bytes:
        if calls.is_ours(self._http, pdf_url):
            return self._run(calls.pdf(pdf_url))
        with httpx.Client(timeout=self._http.timeout) as plain:
            return self._run(calls.pdf(pdf_url), plain)
