"""S3 storage against a real S3-compatible server on loopback (moto's server, in its own process)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from pydantic import ValidationError

from service.api.errors import error_response
from service.app import create_app
from service.core.errors import TransientJobError, Unavailable
from service.core.settings import Settings
from service.dev.embedded_redis import free_port
from service.report.renderer import PdfRenderer
from service.storage.factory import storage_from
from service.storage.local import LocalStorage
from service.storage.s3 import ObjectStoreUnavailable, S3Config, S3Storage
from tests.conftest import (
    InputFiles,
    LiveServer,
    bearer,
    create_key,
    make_settings,
    run_burst_worker,
    worker_deps,
)
from tests.worker.support import run_once

KEY_ID, SECRET = "test-key", "test-secret"
CSV = "region,revenue\nnorth,1200\nsouth,980\n"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """``python -m moto.server``: S3's HTTP API, spoken over a real socket by a separate process."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The developer's AWS profile, keys or endpoint must not leak into these tests."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def raw_client(endpoint: str) -> Any:
    """boto3 itself, to look at the bucket behind our back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def bucket(s3_server: str) -> str:
    name = f"reports-{uuid.uuid4().hex[:12]}"
    raw_client(s3_server).create_bucket(Bucket=name)
    return name


def s3_config(bucket: str, endpoint: str, **options: Any) -> S3Config:
    return S3Config(
        bucket=bucket, endpoint_url=endpoint, access_key_id=KEY_ID, secret_access_key=SECRET, **options
    )


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    listing = raw_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture
async def storage(s3_server: str, bucket: str) -> AsyncIterator[S3Storage]:
    store = S3Storage(s3_config(bucket, s3_server, prefix="/svc/", page_size=2))
    yield store
    await store.aclose()


async def test_put_get_delete_round_trip_under_the_prefix(
    storage: S3Storage, s3_server: str, bucket: str
) -> None:
    await storage.put("reports/rep_1.pdf", b"%PDF-1.7 data", "application/pdf")
    assert await storage.get("reports/rep_1.pdf") == b"%PDF-1.7 data"
    head = raw_client(s3_server).head_object(Bucket=bucket, Key="svc/reports/rep_1.pdf")
    assert head["ContentType"] == "application/pdf" and head["ContentLength"] == 13
    await storage.put("reports/rep_1.pdf", b"%PDF-1.7 newer", "application/pdf")  # overwrite: whole or none
    assert await storage.get("reports/rep_1.pdf") == b"%PDF-1.7 newer"
    await storage.delete("reports/rep_1.pdf")
    assert await storage.get("reports/rep_1.pdf") is None
    await storage.delete("reports/rep_1.pdf")  # deleting what is not there is fine
    assert bucket_keys(s3_server, bucket) == []


async def test_a_missing_key_reads_as_none_and_unsafe_keys_are_refused(storage: S3Storage) -> None:
    assert await storage.get("inputs/inp_nothing") is None
    with pytest.raises(ValueError, match="unsafe storage key"):
        await storage.put("../outside", b"x", "text/plain")


async def test_sweep_deletes_only_objects_older_than_the_age_across_pages(
    storage: S3Storage, s3_server: str, bucket: str
) -> None:
    # The store stamps LastModified in whole seconds, so "old" is 2 s and the cut-off 1.5 s: a new
    # object may look up to 1 s older than it is, an old one never younger.
    await asyncio.gather(*(storage.put(f"reports/old-{n}.pdf", b"x", "application/pdf") for n in range(5)))
    await storage.put("inputs/inp_old", b"x", "text/csv")
    await asyncio.sleep(2.0)
    await storage.put("reports/new.pdf", b"x", "application/pdf")
    assert await storage.sweep("reports", older_than_seconds=1.5) == 5  # pages of 2 keys: 3 pages
    assert bucket_keys(s3_server, bucket) == ["svc/inputs/inp_old", "svc/reports/new.pdf"]
    assert await storage.sweep("nothing-here", older_than_seconds=0) == 0


async def test_a_presigned_url_downloads_without_credentials_and_expires(storage: S3Storage) -> None:
    await storage.put("reports/rep_2.pdf", b"%PDF-1.7 signed", "application/pdf")
    url = await storage.download_url("reports/rep_2.pdf", expires_in=120)
    async with httpx.AsyncClient() as plain:
        response = await plain.get(url)
    assert response.status_code == 200 and response.content == b"%PDF-1.7 signed"
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'inline; filename="rep_2.pdf"'
    # moto serves a link whatever its age (it checks no query signatures), so the expiry is read off
    # the SigV4 link itself; enforcing it is the real store's job.
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["120"]
    signed_at = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
    assert abs(signed_at - time.time()) < 60
    assert storage.presigned_url("reports/rep_2.pdf", 5) != url


async def test_a_missing_bucket_is_a_misconfiguration_that_retries_and_answers_503(s3_server: str) -> None:
    store = S3Storage(s3_config("no-such-bucket-here", s3_server))
    try:
        with pytest.raises(ObjectStoreUnavailable) as put_error:
            await store.put("reports/rep_3.pdf", b"x", "application/pdf")
        with pytest.raises(ObjectStoreUnavailable):
            await store.get("reports/rep_3.pdf")  # not None: a missing bucket is not a missing object
    finally:
        await store.aclose()
    error = put_error.value
    assert error.misconfigured and "refused" in error.reason and "NoSuchBucket" in error.reason
    assert isinstance(error, TransientJobError) and isinstance(error, Unavailable)  # job retries; API: 503
    response = error_response(error)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


async def test_an_unreachable_store_is_a_transient_failure() -> None:
    store = S3Storage(s3_config("reports", f"http://127.0.0.1:{free_port()}", attempts=1))
    try:
        for call in (store.put("reports/r.pdf", b"x", "application/pdf"), store.get("reports/r.pdf")):
            with pytest.raises(ObjectStoreUnavailable) as caught:
                await call
            assert not caught.value.misconfigured and "could not be reached" in caught.value.reason
    finally:
        await store.aclose()


def test_settings_need_a_bucket_for_any_s3_setting_and_pick_the_backend(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="S3_BUCKET is required when S3_ENDPOINT_URL"):
        Settings(_env_file=None, s3_endpoint_url="https://example.invalid")
    with pytest.raises(ValidationError, match="together"):
        Settings(_env_file=None, s3_bucket="b", s3_access_key_id="only-the-id")
    local = Settings(_env_file=None, data_dir=tmp_path)
    assert isinstance(storage_from(local), LocalStorage)
    remote = Settings(_env_file=None, s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9")
    assert isinstance(storage_from(remote), S3Storage) and remote.pdf_url_ttl_seconds == 900


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, s3_server: str, bucket: str) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        s3_bucket=bucket,
        s3_endpoint_url=s3_server,
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SECRET,
        s3_prefix="svc",
        pdf_url_ttl_seconds=300,
    )


async def test_a_report_job_keeps_input_and_pdf_in_the_bucket_and_pdf_url_downloads_it(
    api: httpx.AsyncClient,
    settings: Settings,
    renderer: PdfRenderer,
    s3_server: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    upload = await api.post(
        "/api/inputs?name=sales.csv", content=CSV, headers={**key, "Content-Type": "text/csv"}
    )
    assert upload.status_code == 201, upload.text
    accepted = await api.post(
        "/api/reports", json={"inputDataUrl": upload.json()["inputDataUrl"]}, headers=key
    )
    assert accepted.status_code == 202, accepted.text
    async with worker_deps(settings, renderer) as deps:
        await run_burst_worker(settings, deps)

    status = (await api.get(accepted.json()["statusUrl"], headers=key)).json()
    assert status["state"] == "completed", status
    pdf_url = status["result"]["pdfUrl"]
    assert pdf_url.startswith(f"{s3_server}/{bucket}/svc/reports/rep_") and "X-Amz-Signature=" in pdf_url
    assert parse_qs(urlsplit(pdf_url).query)["X-Amz-Expires"] == ["300"]
    async with httpx.AsyncClient() as plain:  # no API key: the link is the credential
        direct = await plain.get(pdf_url)
    assert direct.status_code == 200 and direct.content.startswith(b"%PDF")

    served = await api.get(f"{accepted.json()['statusUrl']}/pdf", headers=key)  # the API path still works
    assert served.status_code == 200 and served.content == direct.content
    stranger = bearer(await create_key(settings, "mallory", "pro"))
    assert (await api.get(f"{accepted.json()['statusUrl']}/pdf", headers=stranger)).status_code == 404

    input_id = upload.json()["inputId"]
    report_id = accepted.json()["reportId"]
    assert bucket_keys(s3_server, bucket) == [f"svc/inputs/{input_id}", f"svc/reports/{report_id}.pdf"]
    assert not (tmp_path / "data").exists()  # nothing went to local disk


async def test_a_store_failure_while_storing_the_pdf_retries_the_job(
    api: httpx.AsyncClient, settings: Settings, renderer: PdfRenderer, inputs: InputFiles
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    accepted = await api.post(
        "/api/reports", json={"inputDataUrl": inputs.add("sales.csv", CSV)}, headers=key
    )
    job_id = accepted.json()["jobId"]
    broken = settings.model_copy(update={"s3_bucket": "no-such-bucket-here"})
    async with worker_deps(broken, renderer) as deps:
        assert await run_once(deps, job_id) == "queued"
        record = await deps.jobs.get(job_id) or {}
    # The store's Retry-After is the floor of the backoff.
    assert int(record["due_ms"]) - int(time.time() * 1000) >= 4_000
    assert (record["state"], record["attempts"]) == ("queued", "1")
    assert "object store refused to store an object (404 NoSuchBucket)" in record["last_error"]


async def test_the_api_answers_503_when_the_bucket_is_missing(
    redis_url: str, tmp_path: Path, s3_server: str
) -> None:
    broken = make_settings(
        redis_url,
        tmp_path,
        s3_bucket="no-such-bucket-here",
        s3_endpoint_url=s3_server,
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SECRET,
    )
    key = bearer(await create_key(broken, "alice", "pro"))
    async with (
        LiveServer(create_app(broken, configure_logs=False)) as live,
        httpx.AsyncClient(base_url=live.url) as api,
    ):
        response = await api.post("/api/inputs", content=CSV, headers={**key, "Content-Type": "text/csv"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"] == "unavailable" and "object store" in response.json()["message"]
