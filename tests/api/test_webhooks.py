"""The API's side of webhooks: ``callbackUrl`` checked like input URLs and part of the idempotency
fingerprint, the status object's ``callback``, and ``GET /api/webhooks/secret``."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from service.core.settings import Settings
from tests.conftest import api_with, bearer, create_key, make_settings

URL = "https://example.com/data/sales.csv"
HOOK = "https://hooks.example.com/reports"


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


async def post(api: httpx.AsyncClient, who: dict[str, str], **body: str) -> httpx.Response:
    return await api.post("/api/reports", json={"inputDataUrl": URL, **body}, headers=who)


async def test_a_callback_url_is_kept_and_shown_pending_in_the_status(
    api: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    submitted = await post(api, alice, callbackUrl=HOOK)
    assert submitted.status_code == 202, submitted.text
    status = (await api.get(f"/api/reports/{submitted.json()['jobId']}", headers=alice)).json()
    assert status["callback"] == {"url": HOOK, "state": "pending", "attempts": 0}
    plain = (await post(api, alice)).json()
    assert (await api.get(f"/api/reports/{plain['jobId']}", headers=alice)).json()["callback"] is None


@pytest.mark.parametrize(
    "callback",
    [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.0.0.7/hook",
        "http://2130706433/hook",  # 127.0.0.1 in the resolver's decimal form
        "http://169.254.169.254/latest",
    ],
)
async def test_a_private_callback_url_is_refused_at_submit_by_default(
    redis_url: str, tmp_path: Path, callback: str
) -> None:
    settings = make_settings(redis_url, tmp_path / "data", allow_private_input_urls=False)
    who = bearer(await create_key(settings, "alice", "pro"))
    async with api_with(settings) as api:
        response = await post(api, who, callbackUrl=callback)
    assert response.status_code == 400, response.text
    assert response.json()["issues"][0].startswith("callbackUrl: the callback URL points to")


async def test_a_loopback_callback_url_is_accepted_when_private_urls_are_allowed(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    assert settings.allow_private_input_urls
    assert (await post(api, alice, callbackUrl="http://127.0.0.1:9000/hook")).status_code == 202
    # Cloud metadata stays refused whatever the setting says.
    assert (await post(api, alice, callbackUrl="http://169.254.169.254/x")).status_code == 400


@pytest.mark.parametrize(
    "callback", ["ftp://hooks.example.com/x", "input://inp_0123", "https://user:pw@hooks.example.com/", ""]
)
async def test_a_callback_url_that_is_not_plain_http_is_refused(
    api: httpx.AsyncClient, alice: dict[str, str], callback: str
) -> None:
    response = await post(api, alice, callbackUrl=callback)
    assert response.status_code == 400 and "callbackUrl" in response.json()["issues"][0]


async def test_the_callback_url_is_part_of_the_idempotency_fingerprint(
    api: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    first = await post(api, alice, idempotencyKey="hook-key-1", callbackUrl=HOOK)
    again = await post(api, alice, idempotencyKey="hook-key-1", callbackUrl=HOOK)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.headers["idempotent-replayed"] == "true" and again.json()["jobId"] == first.json()["jobId"]
    other = await post(api, alice, idempotencyKey="hook-key-1", callbackUrl=HOOK + "/other")
    none = await post(api, alice, idempotencyKey="hook-key-1")
    assert (other.status_code, none.status_code) == (422, 422)
    assert other.json()["error"] == "idempotency_key_mismatch"
    plain = await post(api, alice, idempotencyKey="hook-key-2")
    added = await post(api, alice, idempotencyKey="hook-key-2", callbackUrl=HOOK)
    assert (plain.status_code, added.status_code) == (202, 422)


async def test_the_secret_is_created_on_first_use_the_same_after_and_each_users_own(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    first = await api.get("/api/webhooks/secret", headers=alice)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:], validate=True)) <= 64
    assert (await api.get("/api/webhooks/secret", headers=alice)).json() == {"secret": secret}
    # Another key of the same user: the same secret; another user: their own.
    same_user = bearer(await create_key(settings, "alice", "pro"))
    assert (await api.get("/api/webhooks/secret", headers=same_user)).json()["secret"] == secret
    bob = bearer(await create_key(settings, "bob", "free"))
    assert (await api.get("/api/webhooks/secret", headers=bob)).json()["secret"] != secret


async def test_the_secret_needs_a_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/webhooks/secret")).status_code == 401
    wrong = await api.get("/api/webhooks/secret", headers=bearer("rsk_" + "0" * 40))
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
