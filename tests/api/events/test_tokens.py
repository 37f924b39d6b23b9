"""Events tokens as an attacker meets them: bound to the key that minted them (revoking it ends
them), unforgeable by re-pointing, never a 500 however odd, and verified by replicas that disagree
on the shared signing secret after a Redis data loss."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from service.api.tokens import parse_events_token, sign_events_token
from service.core.settings import Settings
from service.store import names
from service.store.connection import open_redis
from service.store.keys import KeyStore
from tests.api.events.support import LiveApi, live_api, open_events
from tests.conftest import bearer, command_calls, create_key, make_settings, submit

URL = "https://example.com/data/sales.csv"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data", auth_cache_seconds=0)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[LiveApi]:
    async with live_api(settings) as api:
        yield api


async def revoke(settings: Settings, key: str) -> None:
    """What `python -m service keys revoke` does."""
    client = open_redis(settings.redis_url, fail_fast=True)
    try:
        assert await KeyStore(client).revoke(key) is not None
    finally:
        await client.aclose()


async def status_of(client: httpx.AsyncClient, events_url: str) -> int:
    async with client.stream("GET", events_url) as response:
        return response.status_code


async def test_a_token_stops_working_once_the_key_that_minted_it_is_revoked(
    live: LiveApi, settings: Settings
) -> None:
    doomed, spare = await create_key(settings, "alice", "pro"), await create_key(settings, "alice", "pro")
    minted_by_doomed = (await submit(live.client, bearer(doomed), URL))["eventsUrl"]
    minted_by_spare = (await submit(live.client, bearer(spare), URL))["eventsUrl"]
    assert await status_of(live.client, minted_by_doomed) == 200
    await revoke(settings, doomed)
    refused = await live.client.get(minted_by_doomed)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert "revoked" in refused.json()["message"]
    assert await status_of(live.client, minted_by_spare) == 200  # the user's other key is untouched


async def test_a_revoked_keys_token_stops_within_the_auth_cache_time(redis_url: str, tmp_path: Path) -> None:
    """As for bearer requests, an API process may remember a key for AUTH_CACHE_SECONDS."""
    settings = make_settings(redis_url, tmp_path / "data", auth_cache_seconds=1.0)
    key = await create_key(settings, "alice", "pro")
    async with live_api(settings) as live:
        events_url = (await submit(live.client, bearer(key), URL))["eventsUrl"]
        assert await status_of(live.client, events_url) == 200
        await revoke(settings, key)
        time.sleep(1.1)  # noqa: ASYNC251 - nothing on this loop needs to run meanwhile
        assert await status_of(live.client, events_url) == 401


async def test_a_token_re_pointed_at_another_key_or_in_the_old_format_is_refused(
    live: LiveApi, settings: Settings
) -> None:
    """The signature covers the key id: swapping in another (unrevoked) key's id forges nothing."""
    key, other = await create_key(settings, "alice", "pro"), await create_key(settings, "alice", "pro")
    accepted = await submit(live.client, bearer(key), URL)
    token = parse_events_token(accepted["eventsUrl"].partition("?token=")[2])
    other_id = parse_events_token(
        (await submit(live.client, bearer(other), URL))["eventsUrl"].partition("=")[2]
    )
    assert token is not None and other_id is not None
    path = f"/api/reports/{accepted['jobId']}/events"
    re_pointed = f"{token.expires_at}.{other_id.key_id}.{token.signature}"
    legacy = f"{token.expires_at}.{token.signature}"  # before tokens named their key
    for forged in (re_pointed, legacy):
        assert (await live.client.get(path, params={"token": forged})).status_code == 401


@pytest.mark.parametrize(
    "token",
    [
        "²²²²²²²²²².0123456789ab." + "A" * 43,
        "9999999999.é." + "A" * 43,
        "9999999999.0123456789ab." + "é" * 43,
        "9999999999.0123456789ab.\x00",
        "١٢٣.0123456789ab." + "A" * 43,
        "9" * 40 + ".0123456789ab." + "A" * 43,
        "." * 3,
        "x" * 5000,
    ],
)
async def test_odd_tokens_are_401_never_500(live: LiveApi, token: str) -> None:
    response = await live.client.get("/api/reports/" + "a" * 32 + "/events", params={"token": token})
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


async def test_a_flood_of_bad_tokens_reads_the_shared_secret_at_most_once_per_window(
    live: LiveApi, settings: Settings
) -> None:
    accepted = await submit(live.client, bearer(await create_key(settings, "alice", "pro")), URL)
    token = parse_events_token(accepted["eventsUrl"].partition("?token=")[2])
    assert token is not None
    path = f"/api/reports/{accepted['jobId']}/events"
    before = await command_calls(settings.redis_url, "get")
    for index in range(50):
        forged = f"{token.expires_at}.{token.key_id}.{'B' * 42}{'ABCDEFGHIJ'[index % 10]}"
        assert (await live.client.get(path, params={"token": forged})).status_code == 401
    assert await command_calls(settings.redis_url, "get") - before <= 1


async def test_after_the_shared_secret_is_lost_a_replica_verifies_tokens_signed_with_the_new_one(
    settings: Settings, redis_url: str
) -> None:
    """Replica A holds the old secret; Redis loses it; replica B, starting fresh, generates another
    and hands out tokens signed with it. A re-reads the secret when one fails, and accepts them;
    the tokens A handed out before stay good on A."""
    key = bearer(await create_key(settings, "alice", "pro"))
    async with live_api(settings) as replica_a, live_api(settings) as replica_b:
        before_loss = await submit(replica_a.client, key, URL)
        redis = aioredis.Redis.from_url(redis_url)
        await redis.delete(names.SIGNING_KEY_NAME)
        await redis.aclose()
        after_loss = await submit(replica_b.client, key, URL)
        assert await status_of(replica_a.client, after_loss["eventsUrl"]) == 200
        assert await status_of(replica_a.client, before_loss["eventsUrl"]) == 200
        async with open_events(replica_a.client, after_loss["eventsUrl"]) as stream:
            assert (await stream.next()).event == "progress"


async def test_an_expired_token_is_refused_even_when_well_signed(live: LiveApi, settings: Settings) -> None:
    accepted = await submit(live.client, bearer(await create_key(settings, "alice", "pro")), URL)
    token = parse_events_token(accepted["eventsUrl"].partition("?token=")[2])
    assert token is not None
    redis = aioredis.Redis.from_url(settings.redis_url)
    secret = await redis.get(names.SIGNING_KEY_NAME)
    await redis.aclose()
    assert secret is not None
    expired = sign_events_token(
        secret, accepted["jobId"], key_id=token.key_id, expires_at=int(time.time()) - 1
    )
    response = await live.client.get(f"/api/reports/{accepted['jobId']}/events", params={"token": expired})
    assert response.status_code == 401


def test_a_tokens_signature_is_the_hmac_sha256_of_its_fields_every_time() -> None:
    """The keyed HMAC is copied per token, never reused: the second token of a secret signs exactly
    as the first, and both are HMAC-SHA256 of the NUL-separated fields."""
    secret = b"s" * 32
    for job_id in ("a" * 32, "b" * 32, "a" * 32):
        token = sign_events_token(secret, job_id, key_id="key1", expires_at=1_900_000_000)
        message = f"events\x00{job_id}\x00key1\x001900000000".encode()
        expected = base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).rstrip(b"=")
        assert token == f"1900000000.key1.{expected.decode()}"
