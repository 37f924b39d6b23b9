"""``GET /api/reports`` over real HTTP on a real Redis: the caller's own jobs, newest first, a page at
a time, filtered by state; every bad parameter (a forged cursor too) is the contract's 400."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from service.core.schemas import ReportPage
from service.core.settings import Settings
from service.store.jobs import JobStore
from tests.api.events.support import cancel, complete, start
from tests.conftest import bearer, create_key, submit

URL = "https://example.com/data/sales.csv"


async def submitted(api: httpx.AsyncClient, who: dict[str, str], count: int) -> list[str]:
    job_ids = []
    for _ in range(count):
        await asyncio.sleep(0.002)  # a millisecond of its own: newest first is by creation time
        job_ids.append((await submit(api, who, URL))["jobId"])
    return job_ids


async def walk(api: httpx.AsyncClient, who: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every page, following nextCursor; each page checked against the contract's model."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/api/reports", params=query, headers=who)
        assert response.status_code == 200, response.text
        page = response.json()
        ReportPage.model_validate(page)
        assert len(page["items"]) <= int(params.get("limit", 20))
        items += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


async def test_the_listing_walks_the_callers_jobs_newest_first_page_by_page(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    alice = bearer(await create_key(settings, "alice", "pro"))
    bob = bearer(await create_key(settings, "bob", "free"))
    mine = await submitted(api, alice, 5)
    theirs = await submitted(api, bob, 2)
    listed = await walk(api, alice, limit=2)
    assert [item["jobId"] for item in listed] == list(reversed(mine))
    assert all(item["state"] == "queued" and item["progress"] == 0 for item in listed)
    single = (await api.get(f"/api/reports/{mine[0]}", headers=alice)).json()
    assert listed[-1] == single  # each item is the status object, as GET /api/reports/{jobId} has it
    assert [item["jobId"] for item in await walk(api, bob)] == list(reversed(theirs))


async def test_the_default_page_holds_twenty_and_says_where_to_go_on(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    alice = bearer(await create_key(settings, "alice", "pro"))
    await submitted(api, alice, 21)
    first = (await api.get("/api/reports", headers=alice)).json()
    assert len(first["items"]) == 20 and isinstance(first["nextCursor"], str)
    rest = (await api.get("/api/reports", params={"cursor": first["nextCursor"]}, headers=alice)).json()
    assert len(rest["items"]) == 1 and rest["nextCursor"] is None


async def test_a_state_filter_lists_only_jobs_in_that_state(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    alice = bearer(await create_key(settings, "alice", "pro"))
    job_ids = await submitted(api, alice, 6)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        jobs = JobStore(redis)
        for job_id in job_ids[:2]:
            await start(jobs, job_id)
            await complete(jobs, job_id)
        await cancel(jobs, job_ids[2])
    finally:
        await redis.aclose()
    completed = await walk(api, alice, state="completed", limit=1)
    assert [item["jobId"] for item in completed] == [job_ids[1], job_ids[0]]
    assert all(item["result"]["pdfUrl"] == f"/api/reports/{item['jobId']}/pdf" for item in completed)
    assert [item["jobId"] for item in await walk(api, alice, state="cancelled")] == [job_ids[2]]
    assert [item["jobId"] for item in await walk(api, alice, state="queued")] == job_ids[:2:-1]
    assert await walk(api, alice, state="failed") == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=ten",
        "limit=",
        "state=done",
        "state=QUEUED",
        "cursor=nonsense",
        "cursor=" + "w7I6" + "a" * 32,
        "stat=failed",
        "limit=5&limit=6",
    ],
)
async def test_a_bad_parameter_is_400_bad_request_with_its_issue(
    api: httpx.AsyncClient, settings: Settings, query: str
) -> None:
    alice = bearer(await create_key(settings, "alice", "pro"))
    await submitted(api, alice, 1)
    response = await api.get(f"/api/reports?{query}", headers=alice)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_request" and body["message"]
    name = query.partition("=")[0]
    assert any(name in issue for issue in body["issues"]), body


async def test_a_cursor_is_opaque_and_only_good_for_its_own_users_listing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    alice = bearer(await create_key(settings, "alice", "pro"))
    bob = bearer(await create_key(settings, "bob", "pro"))
    bobs = await submitted(api, bob, 3)
    alices = await submitted(api, alice, 3)
    cursor = (await api.get("/api/reports", params={"limit": 1}, headers=alice)).json()["nextCursor"]
    assert cursor and "alice" not in cursor
    # Bob's listing with Alice's cursor: Bob's jobs older than that point, never Alice's (a cursor
    # is a position in time, not a grant).
    page = (await api.get("/api/reports", params={"cursor": cursor}, headers=bob)).json()
    assert [item["jobId"] for item in page["items"]] == list(reversed(bobs))
    assert not {item["jobId"] for item in page["items"]} & set(alices)


async def test_the_listing_needs_a_key(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/reports?limit=ten")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
