"""Malformed requests, sent as an attacker would, get the contract's 4xx JSON: never a 500 (the
contract allows no 5xx but 503), never a traceback in the log."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import structlog
from starlette.requests import Request

from service.api.bodies import read_body
from service.core.settings import Settings
from tests.conftest import bearer, create_key

URL = "https://example.com/data/sales.csv"


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


def assert_contract_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]


async def post_raw(api: httpx.AsyncClient, who: dict[str, str], body: bytes) -> httpx.Response:
    return await api.post("/api/reports", content=body, headers={**who, "Content-Type": "application/json"})


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,  # Python's json overflows its stack on this: a RecursionError
        b'{"inputDataUrl": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
    ],
    ids=["arrays", "nested-value", "objects"],
)
async def test_json_nested_too_deep_is_400(
    api: httpx.AsyncClient, alice: dict[str, str], body: bytes
) -> None:
    assert_contract_error(await post_raw(api, alice, body), 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputDataUrl": "https://example.com/\\ud800"}',  # a lone surrogate: no text encodes it
        b'{"inputDataUrl": "%s", "idempotencyKey": "\\udfff\\udfff\\udfff\\udfff"}' % URL.encode(),
        b'{"inputDataUrl": "https://example.com/\xff\xfe"}',  # not UTF-8
        '{"inputDataUrl": "https://example.com/x"}'.encode("utf-16"),
        b"\x00\x00\x00{",
        b'{"inputDataUrl": NaN}',
    ],
    ids=["surrogate-url", "surrogate-key", "latin-bytes", "utf-16", "nul", "nan"],
)
async def test_json_that_is_not_utf8_text_is_400(
    api: httpx.AsyncClient, alice: dict[str, str], body: bytes
) -> None:
    assert_contract_error(await post_raw(api, alice, body), 400, "bad_request")


async def test_a_byte_order_mark_before_the_json_is_forgiven(
    api: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    response = await post_raw(api, alice, b'\xef\xbb\xbf{"inputDataUrl": "%s"}' % URL.encode())
    assert response.status_code == 202, response.text


async def test_a_body_cut_short_of_its_content_length_is_a_client_error_not_a_logged_500(
    api: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """The client announces 100 bytes, sends 2 and closes its side: the handler's read ends early."""
    port = httpx.URL(str(api.base_url)).port
    assert port is not None
    head = (
        "POST /api/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {alice['Authorization']}\r\nContent-Length: 100\r\n\r\n"
    )
    with structlog.testing.capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head.encode() + b"{}")
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 5)  # the server closes; it may not answer at all
        writer.close()
        await writer.wait_closed()
        await _logged(logs, "http_request")
    assert not [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert [entry["status"] for entry in logs if entry["event"] == "http_request"] == [400]


async def _logged(logs: list[MutableMapping[str, Any]], event: str) -> None:
    async with asyncio.timeout(5):
        while not any(entry["event"] == event for entry in logs):
            await asyncio.sleep(0.01)


# Header bytes reach Starlette as Latin-1: b"\xb2" is "²", which str.isdigit takes and int() refuses.
@pytest.mark.parametrize("declared", [b"\xb2", b"\xb9\xb3", "١٢".encode(), b"-1"])
async def test_a_content_length_that_is_not_plain_digits_is_not_trusted(declared: bytes) -> None:
    """uvicorn refuses most of these itself; the handler still never calls int() on one."""
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", declared)]}
    assert await read_body(Request(scope, receive), limit=100) == b"{}"
