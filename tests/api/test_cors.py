"""CORS over real HTTP: origins in ``CORS_ALLOW_ORIGINS`` may call every ``/api/*`` endpoint (errors
and event streams included), with ``Vary: Origin`` and the API's own headers allowed; others may not;
nothing outside ``/api/`` is opened up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pydantic
import pytest

from service.core.settings import Settings
from tests.api.events.support import open_events
from tests.conftest import api_with, bearer, create_key, make_settings, submit

APP = "http://app.example:3000"
URL = "https://example.com/data/sales.csv"


@pytest.fixture
async def cors_api(redis_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(redis_url, tmp_path / "data", cors_allow_origins=f"{APP}, https://other.example")
    async with api_with(settings) as client:
        yield client


def preflight(method: str, headers: str, origin: str = APP) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def vary(response: httpx.Response) -> set[str]:
    return {part.strip().lower() for part in response.headers.get("vary", "").split(",")}


async def test_a_preflight_allows_the_apis_own_headers(cors_api: httpx.AsyncClient) -> None:
    asked = "authorization, content-type, idempotency-key"
    response = await cors_api.options("/api/reports", headers=preflight("POST", asked))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
    assert {"GET", "POST", "DELETE"} <= set(response.headers["access-control-allow-methods"].split(", "))
    assert "origin" in vary(response)
    events = await cors_api.options("/api/reports/x/events", headers=preflight("GET", "last-event-id"))
    assert events.status_code == 200 and events.headers["access-control-allow-origin"] == APP


async def test_answers_errors_and_streams_carry_the_origin_and_vary(
    cors_api: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    origin = {"Origin": APP}
    accepted = await cors_api.post("/api/reports", json={"inputDataUrl": URL}, headers={**key, **origin})
    unknown = await cors_api.get("/api/reports/" + "0" * 32, headers={**key, **origin})
    anonymous = await cors_api.get("/api/usage", headers=origin)
    for response, status in ((accepted, 202), (unknown, 404), (anonymous, 401)):
        assert response.status_code == status
        assert response.headers["access-control-allow-origin"] == APP
        assert "origin" in vary(response)
    exposed = accepted.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed and "location" in exposed and "idempotent-replayed" in exposed
    async with open_events(cors_api, accepted.json()["eventsUrl"], origin) as stream:
        assert stream.response.headers["access-control-allow-origin"] == APP
        assert (await stream.next()).event == "progress"


async def test_an_origin_not_listed_gets_no_access_and_a_json_refusal(
    cors_api: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    evil = "https://evil.example"
    answer = await cors_api.get("/api/usage", headers={**key, "Origin": evil})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    assert "origin" in vary(answer)  # a shared cache must not hand this answer to a listed origin
    refused = await cors_api.options("/api/reports", headers=preflight("POST", "authorization", origin=evil))
    assert refused.status_code == 400 and refused.json()["error"] == "bad_request"
    assert "access-control-allow-origin" not in refused.headers
    header = await cors_api.options("/api/reports", headers=preflight("POST", "x-secret"))
    assert header.status_code == 400 and "headers" in header.json()["message"]


@pytest.mark.parametrize("path", ["/", "/healthz", "/metrics", "/openapi.json", "/docs"])
async def test_nothing_outside_the_api_is_opened_to_other_origins(
    cors_api: httpx.AsyncClient, path: str
) -> None:
    response = await cors_api.get(path, headers={"Origin": APP})
    assert "access-control-allow-origin" not in response.headers
    assert (await cors_api.options(path, headers=preflight("GET", "authorization"))).status_code == 405


async def test_without_origins_there_is_no_cross_origin_access(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    key = bearer(await create_key(settings, "alice", "pro"))
    accepted = await submit(api, key, URL)
    answer = await api.get(accepted["statusUrl"], headers={**key, "Origin": APP})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    asked = await api.options("/api/reports", headers=preflight("POST", "authorization"))
    assert asked.status_code == 405 and asked.json()["error"] == "method_not_allowed"


async def test_a_star_allows_any_origin_and_still_names_authorization(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path / "data", cors_allow_origins="*")
    async with api_with(settings) as client:
        response = await client.options(
            "/api/usage", headers=preflight("GET", "authorization", "https://x.example")
        )
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
    # A "*" in Allow-Headers would not cover Authorization (Fetch standard): it is named.
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize(
    "origins", ["https://app.example/", "app.example", "https://app.example/path", "ftp://a"]
)
def test_a_value_that_is_not_an_origin_is_refused_at_start(origins: str, tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="CORS_ALLOW_ORIGINS"):
        make_settings("redis://localhost:6379/0", tmp_path, cors_allow_origins=origins)


def test_origins_are_split_trimmed_and_lower_cased(tmp_path: Path) -> None:
    settings = make_settings(
        "redis://x:1/0", tmp_path, cors_allow_origins=" https://A.example ,http://b:8080,,"
    )
    assert settings.cors_origins == ("https://a.example", "http://b:8080")
    assert make_settings("redis://x:1/0", tmp_path).cors_origins == ()
