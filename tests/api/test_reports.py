"""The report endpoints over real HTTP against a real Redis: status codes, bodies, idempotency, isolation."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import redis.asyncio as aioredis

from service.core.settings import Settings
from service.store import names
from tests.conftest import bearer, create_key

URL = "https://example.com/data/sales.csv"


@pytest.fixture
async def alice(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "alice", "pro"))


@pytest.fixture
async def bob(settings: Settings) -> dict[str, str]:
    return bearer(await create_key(settings, "bob", "free"))


async def post_report(
    api: httpx.AsyncClient, who: dict[str, str], body: object, **headers: str
) -> httpx.Response:
    """Any body, as a client (or an attacker) might send it; the raw response."""
    return await api.post("/api/reports", json=body, headers={**who, **headers})


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


async def test_submit_answers_202_with_ids_and_urls(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await post_report(api, alice, {"inputDataUrl": URL})
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "queued"
    assert len(body["jobId"]) == 32 and body["reportId"].startswith("rep_")
    assert body["statusUrl"] == f"/api/reports/{body['jobId']}"
    assert body["eventsUrl"].startswith(f"/api/reports/{body['jobId']}/events?token=")
    assert response.headers["location"] == body["statusUrl"]


async def test_submit_puts_exactly_one_entry_in_the_queue(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    job_id = (await post_report(api, alice, {"inputDataUrl": URL})).json()["jobId"]
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    [member] = await client.zrange(names.QUEUE, 0, -1)
    assert names.split_member(member)[0] == job_id
    await client.aclose()


async def test_replay_with_same_key_returns_original_job(
    api: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    first = await post_report(api, alice, {"inputDataUrl": URL, "idempotencyKey": "order-1234"})
    again = await post_report(api, alice, {"inputDataUrl": URL, "idempotencyKey": "order-1234"})
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["jobId"] == first.json()["jobId"]
    assert again.json()["reportId"] == first.json()["reportId"]


async def test_idempotency_key_may_come_in_the_header(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    first = await post_report(api, alice, {"inputDataUrl": URL}, **{"Idempotency-Key": "header-key-1"})
    again = await post_report(api, alice, {"inputDataUrl": URL, "idempotencyKey": "header-key-1"})
    assert again.status_code == 200
    assert again.json()["jobId"] == first.json()["jobId"]


async def test_same_key_different_payload_is_422(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    await post_report(api, alice, {"inputDataUrl": URL, "idempotencyKey": "order-1234"})
    other = await post_report(api, alice, {"inputDataUrl": URL + "?v=2", "idempotencyKey": "order-1234"})
    assert_error(other, 422, "idempotency_key_mismatch")


async def test_two_users_with_the_same_key_get_independent_jobs(
    api: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    a = await post_report(api, alice, {"inputDataUrl": URL, "idempotencyKey": "shared-key"})
    b = await post_report(api, bob, {"inputDataUrl": URL, "idempotencyKey": "shared-key"})
    assert a.status_code == b.status_code == 202
    assert a.json()["jobId"] != b.json()["jobId"]


async def test_without_a_key_every_request_is_a_new_job(
    api: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    a = await post_report(api, alice, {"inputDataUrl": URL})
    b = await post_report(api, alice, {"inputDataUrl": URL})
    assert a.json()["jobId"] != b.json()["jobId"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer rsk_nope"}, {"Authorization": "Basic eA=="}]
)
async def test_missing_or_unknown_key_is_401(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_error(await post_report(api, headers, {"inputDataUrl": URL}), 401, "unauthorized")


async def test_revoked_key_is_401(api: httpx.AsyncClient, settings: Settings) -> None:
    from service.store.connection import open_redis
    from service.store.keys import KeyStore

    key = await create_key(settings, "carol", "free")
    client = open_redis(settings.redis_url, fail_fast=True)
    await KeyStore(client).revoke(key)
    await client.aclose()
    assert_error(await post_report(api, bearer(key), {"inputDataUrl": URL}), 401, "unauthorized")


async def test_non_json_content_type_is_415(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await api.post(
        "/api/reports", content=b"inputDataUrl=x", headers={**alice, "Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")


async def test_invalid_json_is_400_with_issues(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await api.post(
        "/api/reports", content=b"{nope", headers={**alice, "Content-Type": "application/json"}
    )
    body = assert_error(response, 400, "bad_request")
    assert isinstance(body["issues"], list) and body["issues"]


@pytest.mark.parametrize(
    ("payload", "mentions"),
    [
        ({}, "inputDataUrl"),
        ({"inputDataUrl": URL, "idempotencyKey": "short"}, "idempotencyKey"),
        ({"inputDataUrl": "ftp://example.com/x.csv"}, "inputDataUrl"),
        ({"inputDataUrl": URL, "colour": "blue"}, "colour"),
        ([URL], "object"),
    ],
)
async def test_invalid_body_is_400_naming_the_problem(
    api: httpx.AsyncClient, alice: dict[str, str], payload: object, mentions: str
) -> None:
    body = assert_error(await post_report(api, alice, payload), 400, "bad_request")
    assert any(mentions in issue for issue in body["issues"])  # type: ignore[attr-defined]


async def test_private_input_url_is_refused_by_default(redis_url: str, tmp_path: object) -> None:
    from pathlib import Path

    from service.app import create_app
    from tests.conftest import LiveServer, make_settings

    strict = make_settings(redis_url, Path(str(tmp_path)), allow_private_input_urls=False)
    key = bearer(await create_key(strict, "dave", "free"))
    async with (
        LiveServer(create_app(strict, configure_logs=False)) as live,
        httpx.AsyncClient(base_url=live.url) as api,
    ):
        response = await post_report(api, key, {"inputDataUrl": "http://169.254.169.254/latest/meta-data"})
    body = assert_error(response, 400, "bad_request")
    assert "private or local" in str(body["message"])


async def test_oversized_body_is_413(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    padding = "x" * (settings.request_max_bytes + 1)
    assert_error(
        await post_report(api, alice, {"inputDataUrl": URL, "pad": padding}), 413, "payload_too_large"
    )


async def test_status_shows_a_queued_job(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    accepted = (await post_report(api, alice, {"inputDataUrl": URL})).json()
    response = await api.get(accepted["statusUrl"], headers=alice)
    assert response.status_code == 200
    status = response.json()
    assert status["jobId"] == accepted["jobId"] and status["reportId"] == accepted["reportId"]
    assert (status["state"], status["progress"], status["attempts"]) == ("queued", 0, 0)
    assert status["createdAt"].endswith("Z") and status["startedAt"] is None and status["finishedAt"] is None
    assert status["result"] is None and status["error"] is None


async def test_another_users_job_is_404_like_an_unknown_one(
    api: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    accepted = (await post_report(api, alice, {"inputDataUrl": URL})).json()
    foreign = await api.get(accepted["statusUrl"], headers=bob)
    unknown = await api.get("/api/reports/" + "0" * 32, headers=bob)
    malformed = await api.get("/api/reports/..%2f..%2fetc", headers=bob)
    assert foreign.json() == unknown.json()
    for response in (foreign, unknown, malformed):
        assert_error(response, 404, "not_found")
    assert_error(await api.get(accepted["statusUrl"] + "/pdf", headers=bob), 404, "not_found")
    assert_error(await api.delete(accepted["statusUrl"], headers=bob), 404, "not_found")


async def test_pdf_of_an_unfinished_job_is_409(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    accepted = (await post_report(api, alice, {"inputDataUrl": URL})).json()
    assert_error(await api.get(accepted["statusUrl"] + "/pdf", headers=alice), 409, "conflict")


async def test_cancel_removes_a_queued_job_from_the_queue(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    accepted = (await post_report(api, alice, {"inputDataUrl": URL})).json()
    response = await api.delete(accepted["statusUrl"], headers=alice)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    client = aioredis.Redis.from_url(settings.redis_url)
    assert await client.zcard(names.QUEUE) == 0
    await client.aclose()
    assert_error(await api.delete(accepted["statusUrl"], headers=alice), 409, "conflict")


async def test_usage_starts_at_zero(
    api: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    response = await api.get("/api/usage", headers=alice)
    assert response.status_code == 200
    assert response.json() == {
        "userId": "alice",
        "plan": "pro",
        "reports": 0,
        "inputTokens": 0,
        "outputTokens": 0,
        "tokensUsed": 0,
        "cacheReadTokens": 0,
        "cacheWriteTokens": 0,
        "costUsd": 0.0,
        "period": datetime.now(UTC).strftime("%Y-%m"),
        "budget": settings.budget_tokens_pro,
        "reservedTokens": 0,
        "budgetRemaining": settings.budget_tokens_pro,
    }


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready"}


async def test_unknown_route_and_wrong_method_answer_json(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/nope"), 404, "not_found")
    assert_error(await api.put("/api/reports"), 405, "method_not_allowed")
