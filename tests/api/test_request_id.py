"""X-Request-ID: a usable one is kept, answered back and logged; anything else is replaced."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import structlog

from service.api.middleware import request_id_from
from tests.api.raw_http import RawRequest, send

FRESH = re.compile(r"[0-9a-f]{16}")


def logged_request_ids(logs: list[MutableMapping[str, Any]]) -> list[object]:
    return [entry["request_id"] for entry in logs if entry["event"] == "http_request"]


@pytest.mark.parametrize(
    "request_id",
    ["abc-123", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "Root=1-67891233;Parent=53995c3f", "x" * 128],
    ids=["short", "uuid", "punctuation", "128 characters"],
)
async def test_a_usable_x_request_id_is_answered_back_and_on_the_requests_log_line(
    api: httpx.AsyncClient, request_id: str
) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await api.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    assert logged_request_ids(logs) == [request_id]


@pytest.mark.parametrize(
    "sent",
    [b"", b"x" * 129, b"has space", b"caf\xc3\xa9", b"tab\there", b"\xff\xfe"],
    ids=["empty", "129 characters", "space", "non-ASCII UTF-8", "tab", "not UTF-8"],
)
async def test_an_unusable_x_request_id_is_replaced_by_a_fresh_one(
    api: httpx.AsyncClient, sent: bytes
) -> None:
    port = httpx.URL(str(api.base_url)).port
    assert port is not None
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await send(port, RawRequest(b"GET", b"/healthz", headers=[(b"X-Request-ID", sent)]))
    assert response is not None and response.status == 200
    answered = response.headers["x-request-id"]
    assert FRESH.fullmatch(answered) and answered.encode() != sent
    assert logged_request_ids(logs) == [answered]


async def test_without_an_x_request_id_each_request_gets_its_own(api: httpx.AsyncClient) -> None:
    answered = [(await api.get("/healthz")).headers["x-request-id"] for _ in range(3)]
    assert all(FRESH.fullmatch(request_id) for request_id in answered)
    assert len(set(answered)) == 3


def test_the_first_x_request_id_header_decides() -> None:
    headers = [(b"host", b"x"), (b"x-request-id", b"first"), (b"x-request-id", b"second")]
    assert request_id_from(headers) == "first"
    assert FRESH.fullmatch(request_id_from([(b"x-request-id", b"bad id"), (b"x-request-id", b"good")]))
