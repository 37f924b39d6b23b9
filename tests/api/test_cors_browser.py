"""Cross-origin in a real Chromium: a page served by a second loopback server (another origin)
submits a job to the API and follows it over SSE, with the ``eventsUrl`` token (EventSource) and
with the key and ``Last-Event-ID`` (fetch: a preflight); it reads an error's JSON too. A page from an
origin not listed is stopped by the browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from service.app import create_app
from service.store.jobs import JobStore
from tests.api.events.support import advance_text, complete, start
from tests.conftest import LiveServer, create_key, make_settings

# The other origin's page: submit, follow both ways, read an error. No CSP: it is the test's own.
SCRIPT = """
const params = new URLSearchParams(location.search);
const api = params.get("api"), key = params.get("key");
window.events = []; window.keyed = ""; window.failure = null;
async function run() {
  const headers = {Authorization: "Bearer " + key, "Content-Type": "application/json",
                   "Idempotency-Key": "from-another-origin"};
  const body = JSON.stringify({inputDataUrl: "https://example.com/data.csv"});
  const answer = await fetch(api + "/api/reports", {method: "POST", headers, body});
  window.location_header = answer.headers.get("Location");
  window.job = await answer.json();
  const source = new EventSource(api + window.job.eventsUrl);
  for (const name of ["progress", "text", "completed"]) {
    source.addEventListener(name, (event) => {
      window.events.push({name, id: event.lastEventId, data: JSON.parse(event.data)});
      if (name === "completed") source.close();
    });
  }
  const unknown = api + "/api/reports/" + "0".repeat(32);
  const missing = await fetch(unknown, {headers: {Authorization: "Bearer " + key}});
  window.missing = {status: missing.status, body: await missing.json()};
}
async function followWithKey(lastId) {
  const answer = await fetch(api + window.job.statusUrl + "/events",
                             {headers: {Authorization: "Bearer " + key, "Last-Event-ID": lastId}});
  window.keyedOpen = true;  // subscribed: what happens from now on reaches this stream
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    window.keyed += value;
  }
}
run().catch((error) => { window.failure = String(error); });
"""


def page_app() -> Starlette:
    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><title>other origin</title><script>{SCRIPT}</script>")

    return Starlette(routes=[Route("/", index)])


@asynccontextmanager
async def origins(redis_url: str, data: Path) -> AsyncIterator[tuple[str, str, str]]:
    """(the API, a listed page origin, an unlisted one): three servers on loopback."""
    async with LiveServer(page_app()) as listed, LiveServer(page_app()) as unlisted:
        settings = make_settings(redis_url, data, cors_allow_origins=listed.url)
        async with LiveServer(create_app(settings, configure_logs=False)) as api:
            yield api.url, listed.url, unlisted.url


async def opened(browser: Browser, origin: str, api: str, key: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{origin}/?api={api}&key={key}")
    return page


async def test_a_page_on_another_origin_submits_and_follows_a_job_over_sse(
    browser: Browser, redis_url: str, tmp_path: Path
) -> None:
    async with origins(redis_url, tmp_path / "data") as (api, listed, _):
        key = await create_key(make_settings(redis_url, tmp_path), "cora", "pro")
        page = await opened(browser, listed, api, key)
        await page.wait_for_function("() => window.missing || window.failure", timeout=10_000)
        assert await page.evaluate("window.failure") is None
        assert await page.evaluate("window.missing") == {
            "status": 404, "body": {"error": "not_found", "message": "no such report job"},
        }  # fmt: skip
        job = await page.evaluate("window.job")
        assert await page.evaluate("window.location_header") == job["statusUrl"]  # an exposed header
        await page.wait_for_function("() => window.events.length === 1")  # the snapshot
        first_id = await page.evaluate("window.events[0].id")
        # Started, not awaited: evaluate would wait for the promise, which ends with the stream.
        await page.evaluate(f"() => {{ followWithKey({orjson.dumps(first_id).decode()}); }}")
        await page.wait_for_function("() => window.keyedOpen === true")
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            jobs = JobStore(redis)
            await start(jobs, job["jobId"])
            await advance_text(redis, job["jobId"], 0, "Revenue rose")
            await complete(jobs, job["jobId"])
        finally:
            await redis.aclose()
        await page.wait_for_function(
            "() => window.events.some((e) => e.name === 'completed')", timeout=10_000
        )
        await page.wait_for_function("() => window.keyed.includes('event: completed')", timeout=10_000)
        names = await page.evaluate("window.events.map((e) => e.name)")
        assert names == ["progress", "progress", "text", "progress", "completed"]
        texts = await page.evaluate("window.events.filter((e) => e.name === 'text').map((e) => e.data)")
        assert texts == [{"offset": 0, "delta": "Revenue rose"}]
        keyed = await page.evaluate("window.keyed")
        assert f"id: {first_id}" not in keyed  # resumed after the Last-Event-ID it sent
        assert "event: text" in keyed and keyed.count("event: completed") == 1


async def test_a_page_on_an_origin_not_listed_cannot_read_the_api(
    browser: Browser, redis_url: str, tmp_path: Path
) -> None:
    async with origins(redis_url, tmp_path / "data") as (api, _, unlisted):
        key = await create_key(make_settings(redis_url, tmp_path), "cora", "pro")
        page = await opened(browser, unlisted, api, key)
        await page.wait_for_function("() => window.failure", timeout=10_000)
        assert "Failed to fetch" in await page.evaluate("window.failure")
        assert await page.evaluate("window.job") is None
