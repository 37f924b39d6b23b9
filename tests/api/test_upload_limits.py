"""Upload limits as an attacker meets them: too fast is 429 rate_limited, too much is 429
quota_exceeded saying what is used and when space frees; a refused or failed upload leaves no
bytes, no record and no charge behind."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis

from service.app import create_app
from service.core.errors import Unavailable
from service.core.settings import Settings
from service.store.connection import open_redis
from service.store.upload_quota import UploadQuotaStore
from service.store.uploads import Upload, UploadStore
from tests.conftest import LiveServer, bearer, create_key, make_settings

QUOTA = 100


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        redis_url,
        tmp_path / "data",
        upload_quota_bytes_pro=QUOTA,
        uploads_per_minute_pro=0,
        uploads_per_minute_free=4,
    )


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveServer]:
    async with LiveServer(create_app(settings, configure_logs=False)) as server:
        yield server


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as api:
        yield api


async def upload(client: httpx.AsyncClient, key: dict[str, str], body: bytes) -> httpx.Response:
    return await client.post("/api/inputs", content=body, headers={**key, "Content-Type": "text/plain"})


def instant(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def stored_inputs(settings: Settings) -> list[str]:
    folder = Path(settings.storage_root) / "inputs"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


async def records(settings: Settings) -> list[str]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return sorted([key async for key in client.scan_iter("rs:input:*")])
    finally:
        await client.aclose()


async def charged(settings: Settings, user_id: str) -> int:
    client = open_redis(settings.redis_url, fail_fast=True)
    try:
        return await UploadQuotaStore(client).used(user_id)
    finally:
        await client.aclose()


async def test_uploading_faster_than_allowed_is_429_rate_limited(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """UPLOADS_PER_MINUTE_FREE=4: a quarter of it (1) at once, then one every 15 s."""
    free, other = (
        bearer(await create_key(settings, "fred", "free")),
        bearer(await create_key(settings, "gina", "free")),
    )
    assert (await upload(client, free, b"a,b\n")).status_code == 201
    refused = await upload(client, free, b"a,b\n")
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 15
    assert (await upload(client, other, b"a,b\n")).status_code == 201  # per user


async def test_over_the_quota_is_429_quota_exceeded_with_what_is_used_and_when_it_frees(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    kept = await upload(client, key, b"x" * 60)
    assert kept.status_code == 201
    refused = await upload(client, key, b"y" * 60)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "quota_exceeded"
    assert "60 of your 100 bytes" in body["message"]
    frees_at = re.search(r"\d{4}-\d\d-\d\dT[0-9:.]+Z", body["message"])
    assert frees_at is not None  # when the kept upload expires, on Redis's clock
    assert abs(instant(frees_at.group()) - instant(kept.json()["expiresAt"])) < 2
    assert int(refused.headers["retry-after"]) > settings.input_retention_seconds - 60
    # Nothing of the refused upload stays: its bytes, its record, its charge.
    assert stored_inputs(settings) == [kept.json()["inputId"]]
    assert await records(settings) == [f"rs:input:{kept.json()['inputId']}"]
    assert await charged(settings, "alice") == 60
    assert (await upload(client, key, b"z" * 40)).status_code == 201  # what is left still fits


async def test_an_upload_larger_than_the_whole_quota_is_told_it_never_fits(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    refused = await upload(client, bearer(await create_key(settings, "alice", "pro")), b"x" * (QUOTA + 1))
    assert refused.status_code == 429 and "larger than the whole quota" in refused.json()["message"]
    assert "retry-after" not in refused.headers


async def test_bytes_that_cannot_be_stored_leave_no_charge(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    blocker = Path(settings.storage_root) / "inputs"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the uploads folder should be")  # every write now fails
    failed = await upload(client, key, b"x" * 60)
    assert failed.status_code == 500 and failed.json()["error"] == "internal_error"
    assert await charged(settings, "alice") == 0 and await records(settings) == []
    blocker.unlink()
    assert (await upload(client, key, b"x" * QUOTA)).status_code == 201  # the whole quota is there


class _RecordFails(UploadStore):
    """Redis goes away between storing the bytes and writing their record."""

    async def record(self, upload: Upload, *, ttl_seconds: int) -> None:
        raise Unavailable("the job store is unreachable; retry shortly", retry_after=2)


async def test_a_record_that_cannot_be_written_takes_back_its_bytes_and_its_charge(
    live: LiveServer, client: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    services = cast(dict[str, Any], live.server.lifespan.state)["services"]
    healthy, services.uploads = services.uploads, _RecordFails(services.redis)
    failed = await upload(client, key, b"x" * 60)
    assert failed.status_code == 503 and failed.json()["error"] == "unavailable"
    assert stored_inputs(settings) == [] and await charged(settings, "alice") == 0
    services.uploads = healthy
    assert (await upload(client, key, b"x" * QUOTA)).status_code == 201
