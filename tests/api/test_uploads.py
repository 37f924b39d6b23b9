"""Uploaded inputs: stored for their owner only, usable in a report, refused when not text or too big."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from service.core.settings import Settings
from service.providers.offline.provider import OfflineProvider
from service.report.renderer import PdfRenderer
from tests.conftest import bearer, create_key, run_burst_worker, worker_deps


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


async def upload(
    api: httpx.AsyncClient, who: dict[str, str], body: bytes, kind: str, name: str = ""
) -> httpx.Response:
    params = {"name": name} if name else None
    return await api.post("/api/inputs", content=body, headers={**who, "Content-Type": kind}, params=params)


async def test_an_upload_becomes_a_report(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings, renderer: PdfRenderer
) -> None:
    uploaded = await upload(api, alice, b"city,visits\nMARKER-upload,7\nparis,3\n", "text/csv", "visits.csv")
    assert uploaded.status_code == 201
    body = uploaded.json()
    assert body["inputDataUrl"].startswith("input://inp_")
    assert (body["name"], body["contentType"], body["size"]) == ("visits.csv", "text/csv", 36)
    accepted = await api.post("/api/reports", json={"inputDataUrl": body["inputDataUrl"]}, headers=alice)
    assert accepted.status_code == 202
    async with worker_deps(settings, renderer, OfflineProvider(chunk_delay=0)) as deps:
        await run_burst_worker(settings, deps)
    pdf = await api.get(f"/api/reports/{accepted.json()['jobId']}/pdf", headers=alice)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "visits.csv" in text and "MARKER-upload" in text


async def test_an_upload_is_stored_outside_redis(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    body = (await upload(api, alice, b"a,b\n1,2\n", "text/csv")).json()
    stored = Path(settings.storage_root) / "inputs" / body["inputId"]
    assert stored.read_bytes() == b"a,b\n1,2\n"


async def test_another_users_upload_cannot_be_used(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    url = (await upload(api, alice, b"a,b\n1,2\n", "text/csv")).json()["inputDataUrl"]
    mallory = bearer(await create_key(settings, "mallory", "free"))
    refused = await api.post("/api/reports", json={"inputDataUrl": url}, headers=mallory)
    assert refused.status_code == 400
    assert refused.json()["error"] == "bad_request" and "no such uploaded input" in refused.json()["message"]


@pytest.mark.parametrize("url", ["input://inp_nothex", "input://../../etc/passwd", "input://inp_" + "0" * 32])
async def test_unknown_or_malformed_upload_urls_are_400(
    api: httpx.AsyncClient, alice: dict[str, str], url: str
) -> None:
    refused = await api.post("/api/reports", json={"inputDataUrl": url}, headers=alice)
    assert refused.status_code == 400 and refused.json()["error"] == "bad_request"


async def test_upload_refusals(api: httpx.AsyncClient, alice: dict[str, str], settings: Settings) -> None:
    assert (await upload(api, alice, b"x", "image/png")).json()["error"] == "unsupported_media_type"
    too_big = await upload(api, alice, b"a" * (settings.input_max_bytes + 1), "text/plain")
    assert (too_big.status_code, too_big.json()["error"]) == (413, "payload_too_large")
    empty = await upload(api, alice, b"  \n", "text/plain")
    assert (empty.status_code, empty.json()["error"]) == (400, "bad_request")
    binary = await upload(api, alice, b"%PDF-1.7 \x00\x01", "text/plain")
    assert (binary.status_code, binary.json()["error"]) == (400, "bad_request")
    anonymous = await api.post("/api/inputs", content=b"a", headers={"Content-Type": "text/plain"})
    assert anonymous.status_code == 401
